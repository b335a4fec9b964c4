"""Backend faults against a fault-injecting OpenAI-compatible server: retries, Retry-After, clear errors,
nothing recorded for a failed call, and resumption once the server recovers."""

import json

import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

from lbt_dspy.cli import main
from lbt_dspy.config import LbtConfig
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
        calls = run_m1(LbtConfig.from_dict(cfg), tmp_path / "run", progress=False)
        assert calls["failed"] == 0
        # 1 greedy + 2 pairs + 4 exams, plus the two faulted attempts
        assert len(srv.requests) == 7 + 2
    assert len(records(tmp_path / "run", "exam")) == 4


def test_retry_after_is_honoured(tmp_path):
    with FakeOpenAI(faults=[429], retry_after="2") as srv:
        cfg = fake_config(srv.api_base, num_retries=2, concurrency=1,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1})
        run_m1(LbtConfig.from_dict(cfg), tmp_path / "run", progress=False)
        first, second = srv.requests[0]["time"], srv.requests[1]["time"]
    assert second - first >= 1.9  # waited as the server asked, not the default 1 s backoff


def test_exhausted_retries_give_a_clear_error_and_nothing_recorded(tmp_path, capsys):
    with FakeOpenAI(faults=[500] * 50) as srv:
        cfg = fake_config(srv.api_base, num_retries=2, concurrency=1,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1})
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(cfg))
        code = main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"])
        err = capsys.readouterr().err
        assert code == 1
        assert "failed after 3 attempt(s) each" in err and srv.api_base in err
        assert "rerun the same command to retry" in err
        assert records(tmp_path / "run", "greedy") == [] and records(tmp_path / "run", "teach") == []
        n_failed_requests = len(srv.requests)
        srv.faults.clear()  # the server recovers
        assert main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"]) == 0
    assert n_failed_requests == 3 * 3  # 1 greedy + 2 pairs, 3 attempts each; exams never started
    assert len(records(tmp_path / "run", "exam")) == 4
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
