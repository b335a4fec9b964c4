"""Backend faults against a fault-injecting OpenAI-compatible server: retries, Retry-After, clear errors,
nothing recorded for a failed call, and resumption once the server recovers."""

import json

import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

from lbt_dspy.cli import main
from lbt_dspy.config import M1Config
from lbt_dspy.m1 import run_m1

SECRET = "sk-test-PLANTED-SECRET-9876"


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", SECRET)


def records(run, stage):
    path = run / f"{stage}.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.parametrize("fault", [500, 502, 503, 429, "truncated", "empty", "drop", "timeout"])
def test_each_fault_is_retried_and_the_run_completes(tmp_path, fault):
    with FakeOpenAI(faults=[fault, fault]) as srv:
        model_cfg = {"model": "fake", "api_base": srv.api_base, "api_key_env": "FAKE_API_KEY", "timeout": 1}
        cfg = fake_config(srv.api_base, num_retries=3, concurrency=1,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1})
        cfg["teacher_model_cfg"]["model_cfg"] = model_cfg
        calls = run_m1(M1Config.from_dict(cfg), tmp_path / "run", progress=False)
        assert calls["failed"] == 0
        # 1 greedy + 2 pairs + 4 exams, plus the two faulted attempts
        assert len(srv.requests) == 7 + 2
    assert len(records(tmp_path / "run", "exam")) == 4


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAI(faults=[429], retry_after="2") as srv:
        cfg = fake_config(srv.api_base, num_retries=2, concurrency=1,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1})
        run_m1(M1Config.from_dict(cfg), tmp_path / "run", progress=False)
        first, second = srv.requests[0]["time"], srv.requests[1]["time"]
    assert second - first >= 1.9  # waited as the server asked, not the default 1 s backoff


def test_exhausted_retries_give_a_clear_error_and_nothing_recorded(tmp_path, capsys):
    # three 500s: one call's attempts run out, fewer than the 5 consecutive failures that open the breaker
    with FakeOpenAI(faults=[500] * 3) as srv:
        cfg = fake_config(srv.api_base, num_retries=2, concurrency=1,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1})
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        code = main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        err = capsys.readouterr().err
        assert code == 1
        assert "failed after 3 attempt(s) each" in err and srv.api_base in err
        assert "rerun the same command to retry" in err
        assert records(tmp_path / "run", "greedy") == []  # the failed call is not recorded
        n_requests = len(srv.requests)
        assert main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"]) == 0  # the rerun retries it
    assert n_requests == 3 + 2 + 4  # the greedy call's 3 attempts; then 2 pairs and their 4 exams went on
    assert len(records(tmp_path / "run", "greedy")) == 1 and len(records(tmp_path / "run", "exam")) == 4
    assert SECRET not in err


def test_planted_key_appears_in_no_file_a_run_writes(tmp_path, capsys):
    with FakeOpenAI(faults=[500] * 3) as srv:
        cfg = fake_config(srv.api_base, num_retries=0, concurrency=1)
        cfg["teacher_model_cfg"]["model_cfg"]["api_key"] = SECRET  # inline key, seed style
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        out = capsys.readouterr()
    written = [p for p in (tmp_path / "run").rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"config.yaml", "report.md", "exam.jsonl"}
    for p in written:
        assert SECRET.encode() not in p.read_bytes(), p
    assert SECRET not in out.out and SECRET not in out.err


# --- a dead backend fails fast (circuit breaker) -------------------------------------------------------
def test_the_breaker_opens_after_five_failures_and_dspy_retries_stop_at_once():
    """Queued calls and DSPy's own retries (num_retries=5, backoff 1-16 s) fail at once once it is open."""
    import time

    import dspy

    from lbt_dspy.errors import backend_down
    from lbt_dspy.models import OpenAICompatEngine

    with FakeOpenAI(faults=[503] * 100) as srv:
        engine = OpenAICompatEngine("fake", api_base=srv.api_base, api_key="k")
        lm = dspy.LM("openai/fake", engine=engine, cache=False, num_retries=5)
        engine.breaker.reset_after = 3600
        t0 = time.monotonic()
        with pytest.raises(Exception) as err:
            lm("first")  # attempts 1-5 fail (backoff 1+2+4+8 s); the 5th opens the breaker: no 6th
        first = time.monotonic() - t0
        assert backend_down(err.value) is not None and srv.api_base in str(backend_down(err.value))
        assert len(srv.requests) == 5
        t0 = time.monotonic()
        for q in range(20):  # queued calls: no request, no retry, no backoff
            with pytest.raises(Exception) as err:
                lm(f"queued {q}")
            assert backend_down(err.value) is not None
        assert time.monotonic() - t0 < 1.0 and len(srv.requests) == 5
    assert 14 < first < 20  # without the breaker: 31 s (a 16 s backoff, then a 6th attempt)


def test_an_open_breaker_lets_one_probe_through_and_a_live_server_closes_it():
    from dspy.lm15 import TransportError

    from lbt_dspy.errors import BackendDown
    from lbt_dspy.models.engine import CircuitBreaker

    b = CircuitBreaker("http://x/v1", failures=3, reset_after=0.2)
    for _ in range(2):
        b.record(b.before_call(), TransportError("refused"))
    b.record(b.before_call(), None)  # an answer: the count starts again
    for _ in range(3):
        b.record(b.before_call(), TransportError("refused"))
    assert b.is_open
    with pytest.raises(BackendDown, match=r"http://x/v1: backend down \(3 consecutive failures, last: TransportError"):
        b.before_call()
    import time

    time.sleep(0.25)
    probe = b.before_call()
    assert probe is True
    with pytest.raises(BackendDown):  # one probe at a time
        b.before_call()
    b.record(probe, None)
    assert not b.is_open and b.before_call() is False


def test_client_errors_do_not_open_the_breaker():
    from dspy.lm15 import InvalidRequestError, RateLimitError

    from lbt_dspy.models.engine import CircuitBreaker

    b = CircuitBreaker("http://x/v1", failures=2)
    for exc in (InvalidRequestError("400"), RateLimitError("429"), InvalidRequestError("404")) * 3:
        b.record(b.before_call(), exc)
    assert not b.is_open


def test_a_run_against_a_failing_server_stops_with_one_line_naming_the_endpoint(tmp_path, capsys):
    import time

    with FakeOpenAI(faults=[500] * 1000) as srv:
        cfg = fake_config(srv.api_base, num_retries=5, concurrency=2)
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        t0 = time.monotonic()
        code = main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        elapsed = time.monotonic() - t0
        err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"lbt: error: {srv.api_base}: backend down (5 consecutive failures")
    assert "rerun the same command" in err
    assert len(srv.requests) <= 5 + 2  # then at most the calls in flight; none retried 6 times
    assert elapsed < 30  # was 250+ s (every call retried with backoff)
