"""The engine: vLLM's server started by lbt, its faults as one line, structured outputs through the client path,
the prefix-cache counters, and the `transformers serve` fallback selected explicitly."""

import socket
import sys
from typing import Literal

import dspy
import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

from lbt_dspy.cli import main
from lbt_dspy.errors import LbtEnvironmentError, LbtError
from lbt_dspy.model_output import predict_or_unparsed
from lbt_dspy.models import ModelPool, VLLMServer, checkpoint_path
from lbt_dspy.models.pool import normalize_sample_cfg
from lbt_dspy.models.server import LocalServer, start_failure
from lbt_dspy.models.vllm_server import hit_rate, parse_prefix_cache


# --- a server that cannot start is one line naming why and its log ----------------------------------------------
@pytest.mark.parametrize("log, reason", [
    ("ERROR: [Errno 98] error while attempting to bind on address ('127.0.0.1', 8000): address already in use",
     "port 8000 is taken"),
    ("ValueError: No available memory for the cache blocks. Try increasing `VLLM_CPU_KVCACHE_SPACE`",
     "not enough memory"),
    ("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", "not enough memory"),
    ("OSError: /tmp/x does not appear to have a file named config.json", "the checkpoint cannot be loaded"),
    ("Fatal Python error: Illegal instruction", "this CPU is not supported"),
    ("some line\nRuntimeError: Engine core initialization failed. See root cause above.",
     "RuntimeError: Engine core initialization failed. See root cause above."),
])
def test_start_failures_are_named(log, reason):
    assert start_failure(log, 8000) == reason


class _Dies(LocalServer):
    kind = "test server"

    def __init__(self, text, tmp_path):
        super().__init__(tmp_path / "ckpt", log_path=tmp_path / "server.log", startup_timeout=30)
        self.text = text

    def command(self):
        return [sys.executable, "-c", f"import sys; print({self.text!r}, flush=True); sys.exit(3)"]


def test_a_server_that_dies_at_start_is_one_line_naming_the_cause_and_the_log(tmp_path):
    with pytest.raises(LbtEnvironmentError) as err:
        _Dies("OSError: [Errno 98] Address already in use", tmp_path).start()
    msg = str(err.value)
    assert "\n" not in msg and "exited with code 3" in msg and "is taken" in msg and str(tmp_path / "server.log") in msg


def test_no_vllm_anywhere_is_one_line(monkeypatch, tmp_path):
    import lbt_dspy.models.vllm_server as vs

    monkeypatch.delenv("LBT_VLLM_PYTHON", raising=False)
    monkeypatch.setattr(vs.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(vs.sys, "prefix", str(tmp_path / "nowhere" / ".venv"))
    with pytest.raises(LbtEnvironmentError, match="vLLM is not installed: run `make setup`"):
        vs.vllm_python()
    monkeypatch.setenv("LBT_VLLM_PYTHON", str(tmp_path / "missing-python"))
    with pytest.raises(LbtEnvironmentError, match="LBT_VLLM_PYTHON=.*no such file"):
        vs.vllm_python()


# --- structured outputs and the prefix cache -----------------------------------------------------------------
class Weather(dspy.Signature):
    """Classify the climate."""

    report: str = dspy.InputField()
    climate: Literal["hot", "cold", "mild"] = dspy.OutputField()


def test_the_json_schema_of_a_signature_reaches_a_vllm_server(monkeypatch):
    """DSPy's JSONAdapter (ChatAdapter's fallback) asks for the signature's schema; the engine sends it as the
    request's ``response_format``, which vLLM decodes to."""
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI() as srv, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm({"model_type": "vllm", "model_cfg": {"model": "fake", "api_base": srv.api_base,
                                                          "api_key_env": "FAKE_API_KEY"}})
        assert lm.engine.supports_response_schema
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            predict_or_unparsed(dspy.Predict(Weather), Weather, report="snow, minus 5")
    fmt = srv.requests[-1]["body"]["response_format"]
    assert fmt["type"] == "json_schema"
    assert fmt["json_schema"]["schema"]["properties"]["climate"]["enum"] == ["hot", "cold", "mild"]


def test_an_endpoint_that_cannot_decode_to_a_schema_gets_none(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI() as srv, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm({"model_type": "openai", "model_cfg": {"model": "fake", "api_base": srv.api_base,
                                                            "api_key_env": "FAKE_API_KEY"}})
        with dspy.context(lm=lm, adapter=dspy.JSONAdapter()):
            predict_or_unparsed(dspy.Predict(Weather), Weather, report="sun, 40 C")
    assert all("response_format" not in r["body"] for r in srv.requests)


def test_prefix_cache_counters_and_hit_rate():
    text = ("# HELP vllm:prefix_cache_queries_total ...\n"
            'vllm:prefix_cache_queries_total{engine="0",model_name="m"} 1357.0\n'
            'vllm:prefix_cache_hits_total{engine="0",model_name="m"} 768.0\n'
            'vllm:prefix_cache_hits_created 1.7e9\n')
    assert parse_prefix_cache(text) == {"hits": 768.0, "queries": 1357.0}
    assert parse_prefix_cache("vllm:num_requests_running 0\n") is None
    assert hit_rate({"hits": 0.0, "queries": 100.0}, {"hits": 60.0, "queries": 300.0}) == \
        {"hits": 60, "queries": 200, "rate": 0.3}
    assert hit_rate(None, {"hits": 1.0, "queries": 2.0}) is None


# --- the real servers ------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_vllm_on_a_checkpoint_it_cannot_load_is_one_line(tmp_path, capsys, monkeypatch):
    """A real vLLM server on a directory that is not a checkpoint: `lbt m1` stops with one line naming the log."""
    monkeypatch.setenv("FAKE_API_KEY", "k")
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    entry = {"model_type": "vllm", "model_cfg": {"model": str(bad), "name": "bad"}}
    cfg = fake_config("http://127.0.0.1:9/v1", teacher_model_cfg=entry, student_model_cfgs=[entry])
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
    rc = main(["m1", str(tmp_path / "c.yaml"), "--output-path", str(tmp_path / "run"), "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert "vLLM server for" in err and "log: " in err and "server-0.log" in err


@pytest.mark.integration
def test_vllm_on_a_port_that_is_taken_is_one_line(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(LbtEnvironmentError) as err:
            VLLMServer(checkpoint_path(), port=port, log_path=tmp_path / "v.log").start()
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "v.log") in msg
    assert f"port {port} is taken" in msg or "did not answer /health" in msg


@pytest.mark.integration
def test_the_transformers_fallback_serves_greedy_and_sampled_requests(tmp_path, monkeypatch):
    """`server: transformers`, selected explicitly: one server per sampling setting, a sampling view of the
    checkpoint (the checkpoint itself unchanged), the prefill rendered here and continued."""
    from transformers import GenerationConfig

    before = GenerationConfig.from_pretrained(str(checkpoint_path())).to_dict()
    with ModelPool(cache=False, num_retries=1, log_dir=str(tmp_path)) as pool:
        entry = {"model_type": "embedded", "model_cfg": {"server": "transformers"}}
        greedy = pool.lm(entry, {"do_sample": False, "max_new_tokens": 16})
        sampled = pool.lm(entry, {"temperature": 1.0, "max_new_tokens": 16})
        assert len(pool._servers) == 2 and greedy.engine.prefill == "completions"
        msgs = [{"role": "user", "content": "Count to five."}, {"role": "assistant", "content": "One,"}]
        g = [greedy(messages=msgs)[0] for _ in range(2)]
        s = [sampled(messages=msgs, rollout_id=i)[0] for i in range(1, 5)]
    assert g[0] == g[1] and all(isinstance(x, str) for x in s)
    assert len(set(s)) > 1  # sampling really is on in the sampled server
    assert GenerationConfig.from_pretrained(str(checkpoint_path())).to_dict() == before  # the checkpoint unchanged


def test_sampling_penalties_reach_the_server(monkeypatch):
    """``frequency_penalty``/``presence_penalty`` in a sample_cfg are sent (vLLM takes both): the bench's teacher
    uses one so that the embedded model's JSON-constrained instruction closes instead of looping."""
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI() as srv, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm({"model_type": "vllm", "model_cfg": {"model": "fake", "api_base": srv.api_base,
                                                          "api_key_env": "FAKE_API_KEY"}},
                     {"temperature": 0.7, "frequency_penalty": 0.5, "presence_penalty": 0.25})
        lm("What is 1 + 1?")
    body = srv.requests[-1]["body"]
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0.5, 0.25)


def test_a_penalty_out_of_range_is_a_one_line_config_error():
    with pytest.raises(LbtError, match=r"teacher.sample_cfg.frequency_penalty: must be in \[-2, 2\]"):
        normalize_sample_cfg({"frequency_penalty": 3}, "teacher.sample_cfg")
