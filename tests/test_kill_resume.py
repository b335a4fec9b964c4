"""Crash safety: `lbt m1` and `lbt m3` killed with SIGKILL at 20 random points; every rerun resumes, the end result
is the same as an uninterrupted run, and finished calls are never requested again."""

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


def _kill_and_finish(cmd, env, rng, progress, steps, times=20) -> int:
    """Start `cmd` and SIGKILL it `times` times, each during start-up (a random step of 0: after a random
    delay) or once `progress()` grew by the step; then run it to the end. Returns the kills made (fewer
    when a run finished before its kill point)."""
    kills = 0
    while kills < times:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        step = rng.choice(steps)
        if step == 0:
            time.sleep(rng.uniform(0.1, 1.5))
        else:
            target = progress() + step
            while progress() < target and proc.poll() is None:
                time.sleep(0.002)
        if proc.poll() is not None:
            break  # it finished before this kill point: nothing left to interrupt
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    return kills


@pytest.mark.slow
def test_twenty_sigkills(tmp_path):
    env = {**os.environ, "FAKE_API_KEY": "k"}
    with FakeOpenAI() as srv:
        subprocess.run(LBT + ["m1", str(_cfg(tmp_path, srv.api_base)), "--output-path", str(tmp_path / "ref"), "-q"],
                       env=env, check=True, capture_output=True)
    run = tmp_path / "run"
    with FakeOpenAI(delay=0.05) as srv:
        cmd = LBT + ["m1", str(_cfg(tmp_path, srv.api_base)), "--output-path", str(run), "-q"]
        # kill points: during start-up (at a random time), or after 1 or 2 more records landed
        kills = _kill_and_finish(cmd, env, random.Random(20), lambda: _count(run), steps=[0, 1, 1, 2])
        requested = len(srv.requests)
    assert kills == 20
    keys = [json.loads(x)["key"] for s in ("greedy", "teach", "exam") for x in open(run / f"{s}.jsonl")]
    assert len(keys) == len(set(keys)) == TOTAL
    # only calls in flight at a kill (at most `concurrency` each) may have been asked twice
    assert TOTAL <= requested <= TOTAL + 2 * kills
    assert _table(run) == _table(tmp_path / "ref")


# --- lbt m3 ------------------------------------------------------------------------------------------
def _m3_cfg(tmp_path, api_base, **over):
    rows = [{"label": 1, "text": f"pos-{i}"} for i in range(16)] + [{"label": 0, "text": f"neg-{i}"} for i in range(16)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = [{"label": 1, "text": f"pos-{i}"} for i in range(4, 24)] + [{"label": 0, "text": f"neg-{i}"} for i in range(20)]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
    model = {"model": "fake", "api_base": api_base, "api_key_env": "FAKE_API_KEY"}
    cfg = {"dataset_type": "jsonl", "question": "Is the text positive?", "dataset_cfg": {"data_dir": str(tmp_path)},
           "teacher_model_cfg": {"model_type": "openai", "model_cfg": model},
           "student_model_cfgs": [{"model_type": "openai", "model_cfg": {**model, "name": "student-a"},
                                   "sample_cfg": {"temperature": 0.3}},
                                  {"model_type": "openai",  # its own model name: no request identical to the
                                   "model_cfg": {**model, "model": "fake-b", "name": "student-b"}}],  # teacher's
           "num_examples": 4, "rounds": 3, "beam_size": 2, "minibatch_size": 16, "reflections_per_set": 2,
           "score_sample_size": 16, "random_draws": 2, "concurrency": 2, "num_retries": 0, "cache": False, **over}
    path = tmp_path / "m3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _bodies(requests) -> dict:
    """How often each distinct request body reached the server; a request cut off by a kill before its
    body arrived counts as ``"(cut off)"``."""
    from collections import Counter

    return Counter(json.dumps(r["body"], sort_keys=True) if r["body"] else "(cut off)" for r in requests)


def _m3_records(run):
    """Round records without timings and without how many answers came without a request (a resumed run's
    replayed calls), and test F1s: what must not depend on where the run was killed."""
    rounds = {}
    for line in open(run / "rounds.jsonl"):
        r = json.loads(line)
        rec = {k: v for k, v in r["record"].items() if k != "seconds"}
        rec["calls"] = {k: v for k, v in rec["calls"].items() if k != "cached"}
        rounds[r["key"]] = json.dumps(rec, sort_keys=True)
    evals = {json.loads(x)["key"]: (json.loads(x)["f1"], json.loads(x)["preds"]) for x in open(run / "eval.jsonl")}
    return rounds, evals


@pytest.mark.slow
def test_twenty_sigkills_m3(tmp_path):
    """`lbt m3` killed 20 times, DSPy's cache off: every call is recorded once in the run directory (``teach``,
    ``exam``), the rerun replays them, and the rounds and evaluations equal an uninterrupted run's; no request
    is repeated beyond those in flight at a kill."""
    env = {**os.environ, "FAKE_API_KEY": "k", "DSPY_CACHEDIR": str(tmp_path / "cache")}  # `cache: false` anyway
    with FakeOpenAI() as srv:
        cfg = _m3_cfg(tmp_path, srv.api_base)
        subprocess.run(LBT + ["m3", str(cfg), "--output-path", str(tmp_path / "ref"), "-q"], env=env, check=True,
                       capture_output=True)
        reference = _bodies(srv.requests)
    run = tmp_path / "run"

    def recorded():
        return sum((run / f"{s}.jsonl").read_bytes().count(b"\n") for s in ("teach", "exam")
                   if (run / f"{s}.jsonl").exists())

    with FakeOpenAI(delay=0.02) as srv:
        cmd = LBT + ["m3", str(_m3_cfg(tmp_path, srv.api_base)), "--output-path", str(run), "-q"]
        # kill points: during start-up, or after 1-10 more calls were recorded (inside rounds and evaluations)
        kills = _kill_and_finish(cmd, env, random.Random(3), recorded, steps=[0, 1, 3, 5, 10])
        requested = _bodies(srv.requests)
    assert kills == 20
    for stage in ("teach", "exam", "rounds", "eval"):
        keys = [json.loads(x)["key"] for x in open(run / f"{stage}.jsonl")]
        assert len(keys) == len(set(keys))
    ref_calls = sum(1 for s in ("teach", "exam") for _ in open(tmp_path / "ref" / f"{s}.jsonl"))
    assert recorded() == ref_calls == sum(reference.values())  # every call once, made once by the reference
    assert _m3_records(run) == _m3_records(tmp_path / "ref")
    assert (run / "report.md").exists() and (run / "best_program_LbT.json").read_text() == \
        (tmp_path / "ref" / "best_program_LbT.json").read_text()
    # the same calls as the uninterrupted run; only those in flight at a kill (at most `concurrency`, 2, each)
    # were asked again
    cut_off = requested.pop("(cut off)", 0)
    assert set(requested) == set(reference)
    assert all(requested[b] >= n for b, n in reference.items())
    assert sum(requested.values()) - sum(reference.values()) + cut_off <= 2 * kills


def _server_down_after(srv, proc, done, n: int) -> float:
    """Shut the scripted server down once `done()` reaches `n` (or the run ended); returns when it went down."""
    while done() < n and proc.poll() is None:
        time.sleep(0.005)
    srv.httpd.shutdown()
    srv.httpd.server_close()
    return time.monotonic()


def _m3_calls(run) -> list[str]:
    """The keys of every recorded M3 call; each must be whole and there once."""
    return _record_keys(run, ("teach", "exam"))


def test_m3_ctrl_c_stops_within_two_seconds_and_the_rerun_resumes(tmp_path):
    env = {**os.environ, "FAKE_API_KEY": "k"}
    with FakeOpenAI() as srv:
        ref = tmp_path / "ref"
        cfg = _m3_cfg(tmp_path, srv.api_base, rounds=1, baselines=["zero_shot"])
        subprocess.run(LBT + ["m3", str(cfg), "--output-path", str(ref), "-q"], env=env, check=True, capture_output=True)
    with FakeOpenAI(delay=1.0) as srv:
        run = tmp_path / "run"
        cmd = LBT + ["m3", str(_m3_cfg(tmp_path, srv.api_base, rounds=1, baselines=["zero_shot"])), "--output-path",
                     str(run), "-q"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while len(srv.requests) < 4 and proc.poll() is None:  # two calls done, two slow ones in flight
            time.sleep(0.01)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        stopped = time.monotonic() - t0
        err = proc.stderr.read().strip()
        assert rc == 130 and stopped < 2.0, (stopped, err)
        assert err.splitlines()[-1] == "lbt: interrupted; finished records are kept: rerun the same command to resume"
        kept = len(_m3_calls(run))
        assert kept >= 2
        srv.delay = 0
        asked = len(srv.requests)
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
        assert len(srv.requests) - asked == len(_m3_calls(ref)) - kept  # the rerun asked only what was not kept
    assert sorted(_m3_calls(run)) == sorted(_m3_calls(ref))
    assert _m3_records(run) == _m3_records(ref)


def test_m3_a_dead_server_stops_the_run_within_seconds_with_one_line(tmp_path):
    """M3 goes on past a failed call (left out of a round, asked again by the rerun), but not past a dead server:
    the breaker's one line, exit code 1, the finished calls kept."""
    env = {**os.environ, "FAKE_API_KEY": "k"}
    run = tmp_path / "run"
    with FakeOpenAI(delay=0.02) as srv:
        cmd = LBT + ["m3", str(_m3_cfg(tmp_path, srv.api_base)), "--output-path", str(run), "-q"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t_dead = _server_down_after(srv, proc, lambda: len(_m3_calls(run)), 30)
        rc = proc.wait(timeout=120)
        elapsed = time.monotonic() - t_dead
        err = proc.stderr.read().strip()
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"lbt: error: {srv.api_base}: backend down") and "rerun the same command" in err
    assert elapsed < 60 and len(_m3_calls(run)) >= 30


# --- one writer per run, a dead server fails fast, Ctrl-C stops at once ---------------------------------
def _record_keys(run, stages=("greedy", "teach", "exam")) -> list[str]:
    """The keys of every record of `stages`: every line one complete JSON record, no key there twice."""
    keys = []
    for s in stages:
        f = run / f"{s}.jsonl"
        if f.exists():
            data = f.read_bytes()
            assert not data or data.endswith(b"\n"), f"{f}: torn last line"
            keys += [json.loads(x)["key"] for x in data.splitlines()]
    assert len(keys) == len(set(keys))
    return keys


def _records_are_whole(run):
    """Every line of every stage is one complete JSON record, and no key is there twice."""
    return len(_record_keys(run))


def test_two_runs_on_one_output_path_the_second_is_refused_naming_the_first(tmp_path):
    env = {**os.environ, "FAKE_API_KEY": "k"}
    run = tmp_path / "run"
    with FakeOpenAI(delay=0.05) as srv:
        cmd = LBT + ["m1", str(_cfg(tmp_path, srv.api_base)), "--output-path", str(run), "-q"]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        while _count(run) < 2 and first.poll() is None:
            time.sleep(0.01)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert first.wait(timeout=300) == 0, first.stderr.read()
    err = second.stderr.strip()
    assert second.returncode == 2 and len(err.splitlines()) == 1, err
    assert f"{run}: in use by another lbt process (pid {first.pid})" in err
    assert _records_are_whole(run) == TOTAL  # every key once: the second run wrote nothing


def _time_to_error(tmp_path, kill_after, num_retries=5):
    """Seconds from the scripted server's death (after `kill_after` records; 0: dead from the start) to the
    end of `lbt m1` (default num_retries 5), with its exit code and stderr."""
    env = {**os.environ, "FAKE_API_KEY": "k"}
    run = tmp_path / f"run{kill_after}"
    with FakeOpenAI(delay=0.02) as srv:
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(fake_config(srv.api_base, **{**OVER, "num_retries": num_retries})))
        if not kill_after:
            srv.httpd.shutdown()
            srv.httpd.server_close()
        proc = subprocess.Popen(LBT + ["m1", str(path), "--output-path", str(run), "-q"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t_dead = time.monotonic()
        if kill_after:
            t_dead = _server_down_after(srv, proc, lambda: _count(run), kill_after)
        rc = proc.wait(timeout=120)
        elapsed = time.monotonic() - t_dead
    return elapsed, rc, proc.stderr.read().strip(), srv.api_base, run


@pytest.mark.parametrize("kill_after", [20, 0])
def test_a_dead_server_stops_the_run_within_seconds_with_one_line(tmp_path, kill_after):
    """Was 497 s (killed after 20 records) and 250 s (dead from the start): every call retried 6 times."""
    elapsed, rc, err, api_base, run = _time_to_error(tmp_path, kill_after)
    print(f"server dead after {kill_after} records: error after {elapsed:.1f} s")
    assert rc == 1 and len(err.splitlines()) == 1, err
    assert err.startswith(f"lbt: error: {api_base}: backend down") and "rerun the same command" in err
    assert elapsed < 60
    assert _records_are_whole(run) >= kill_after


def _slow_run(tmp_path, srv, env):
    run = tmp_path / "run"
    cmd = LBT + ["m1", str(_cfg(tmp_path, srv.api_base)), "--output-path", str(run), "-q"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    while len(srv.requests) < 4 and proc.poll() is None:  # two calls done, two slow ones in flight
        time.sleep(0.01)
    return proc, run, cmd


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_stops_within_two_seconds_and_the_rerun_resumes(tmp_path, presses):
    env = {**os.environ, "FAKE_API_KEY": "k"}
    with FakeOpenAI(delay=1.0) as srv:
        proc, run, cmd = _slow_run(tmp_path, srv, env)
        assert proc.poll() is None
        t0 = time.monotonic()
        for _ in range(presses):
            proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=30)
        stopped = time.monotonic() - t0
        err = proc.stderr.read().strip()
        srv.delay = 0
        assert rc == 130 and stopped < 2.0, (stopped, err)
        assert err.splitlines()[-1] == "lbt: interrupted; finished records are kept: rerun the same command to resume"
        kept = _records_are_whole(run)
        assert kept >= 2
        subprocess.run(cmd, env=env, check=True, capture_output=True, timeout=300)
    assert _records_are_whole(run) == TOTAL
