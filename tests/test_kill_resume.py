"""Crash safety: `lbt m1` killed with SIGKILL at 20 random points; every rerun resumes, the end result is the
same as an uninterrupted run, and finished items are never requested again."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

LBT = [sys.executable, "-m", "lbt_dspy.cli"]
OVER = {"dataset_cfg": {"num_families": 4, "num_variants": 3, "seed": 3}, "num_rationales": 3,
        "exam_maker_cfg": {"num_exam_questions": 3, "num_repetitions": 1}, "concurrency": 2}
TOTAL = 4 + 4 * 3 + 4 * 3 * 3


def _cfg(tmp_path, api_base):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(fake_config(api_base, **OVER)))
    return path


def _count(run):
    return sum((run / f"{s}.jsonl").read_bytes().count(b"\n") for s in ("greedy", "teach", "exam")
               if (run / f"{s}.jsonl").exists())


def _table(run):
    return (run / "report.md").read_text().split("## Accuracy vs")[0]


@pytest.mark.slow
def test_twenty_sigkills(tmp_path):
    env = {**os.environ, "FAKE_API_KEY": "k"}
    with FakeOpenAI() as srv:
        subprocess.run(LBT + ["m1", str(_cfg(tmp_path, srv.api_base)), "--output-path", str(tmp_path / "ref"), "-q"],
                       env=env, check=True, capture_output=True)
    rng = random.Random(20)
    run = tmp_path / "run"
    kills = 0
    with FakeOpenAI(delay=0.05) as srv:
        cfg = _cfg(tmp_path, srv.api_base)
        while kills < 20:
            proc = subprocess.Popen(LBT + ["m1", str(cfg), "--output-path", str(run), "-q"], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            # kill points: during start-up (at a random time), or after 1 or 2 more records landed
            grow = rng.choice([0, 1, 1, 2])
            if grow == 0:
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                target = _count(run) + grow
                while _count(run) < target and proc.poll() is None:
                    time.sleep(0.005)
            if proc.poll() is not None:
                break  # it finished before this kill point: nothing left to interrupt
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        subprocess.run(LBT + ["m1", str(cfg), "--output-path", str(run), "-q"], env=env, check=True,
                       capture_output=True)
        requested = len(srv.requests)
    assert kills == 20
    keys = [json.loads(x)["key"] for s in ("greedy", "teach", "exam") for x in open(run / f"{s}.jsonl")]
    assert len(keys) == len(set(keys)) == TOTAL
    # only calls in flight at a kill (at most `concurrency` each) may have been asked twice
    assert TOTAL <= requested <= TOTAL + 2 * kills
    assert _table(run) == _table(tmp_path / "ref")
