"""`replicas: 2` on the embedded model: two real vLLM servers, one SIGKILLed while `lbt m1` runs. The run finishes
on the live one with every record once, the killed server's orphaned engine processes are stopped with lbt, and
the prefix-cache hit rate of each replica (the killed one as of its last reading) and their total reach the
printed output, engine.json, summary.json and report.md. Scripted readings check the per-replica counting."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import yaml

from lbt_dspy.models.vllm_server import PrefixCacheWatch, prefix_cache_counts, prefix_cache_lines
from test_server_guard import group_alive as _group_alive  # noqa: E402

LBT = [sys.executable, "-m", "lbt_dspy.cli"]
A, B = "http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1"


def _counts(hits, queries):
    return {"hits": float(hits), "queries": float(queries)}


def test_each_replica_is_counted_and_a_dead_one_keeps_its_last_reading():
    readings = iter([
        {A: _counts(10, 100), B: _counts(0, 0)},       # entering: the run begins
        {A: _counts(40, 200), B: _counts(30, 60)},     # a reading mid-run
        {A: _counts(70, 300), B: None},                # the end: B no longer answers
    ])
    with PrefixCacheWatch(lambda: next(readings), interval=3600) as watch:
        watch._poll()  # what the thread does every `interval` seconds
    got = watch.result()
    a, b = got["replicas"]
    assert (a["api_base"], a["hits"], a["queries"], a["rate"], a["state"]) == (A, 60, 200, 0.3, "live")
    assert (b["api_base"], b["hits"], b["queries"], b["rate"], b["state"]) == (B, 30, 60, 0.5, "down")
    assert b["as_of_s"] >= 0 and "as_of_s" not in a
    assert (got["hits"], got["queries"], got["rate"]) == (90, 260, round(90 / 260, 4))
    assert watch.result() == got  # read once; asking again changes nothing
    lines = prefix_cache_lines(got)
    assert lines[0] == "vLLM prefix cache: 34.6% of 260 prompt tokens served from it (2 replicas)"
    assert lines[1] == f"  replica {A}: 30.0% of 200 prompt tokens"
    assert lines[2].startswith(f"  replica {B}: 50.0% of 60 prompt tokens, as of its last reading ")
    assert "(down: its /metrics did not answer at the end)" in lines[2] and len(lines) == 3


def test_a_replica_never_read_is_unavailable_not_counted_and_no_server_is_no_report():
    readings = iter([{A: _counts(0, 0), B: None}, {A: _counts(5, 10), B: None}])
    with PrefixCacheWatch(lambda: next(readings), interval=3600) as watch:
        pass
    got = watch.result()
    assert (got["hits"], got["queries"], got["rate"]) == (5, 10, 0.5)
    assert got["replicas"][1] == {"api_base": B, "hits": None, "queries": None, "rate": None, "state": "unavailable"}
    assert prefix_cache_lines(got)[0].endswith("(1 of 2 replicas)")
    assert "unavailable" in prefix_cache_lines(got)[2] and "not counted" in prefix_cache_lines(got)[2]
    with PrefixCacheWatch(dict) as none:  # no vLLM server lbt started (a remote or scripted endpoint)
        assert none._thread is None
    assert none.result() is None and prefix_cache_lines(None) == []
    # an engine.json written before replicas were counted: its total alone
    assert prefix_cache_lines({"hits": 1, "queries": 4, "rate": 0.25}) == [
        "vLLM prefix cache: 25.0% of 4 prompt tokens served from it"]


def test_the_watch_reads_in_the_background_until_closed():
    calls = []

    def read():
        calls.append(time.monotonic())
        return {A: _counts(len(calls), 10 * len(calls))}
    with PrefixCacheWatch(read, interval=0.05) as watch:
        time.sleep(0.5)
    n = len(calls)
    assert n >= 4  # entering, then every 0.05 s
    time.sleep(0.2)
    assert len(calls) == n  # closed: no more readings
    assert watch.result()["replicas"][0]["state"] == "live" and len(calls) == n + 1


# --- the real thing: two vLLM servers of the embedded model, one killed mid-run ----------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    """`pid`'s children, theirs, and so on (lbt -> the server's guard -> the server -> its engine core...)."""
    out, todo = [], [pid]
    while todo:
        kids = _children(todo.pop())
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> list[str]:
    try:
        return open(f"/proc/{pid}/cmdline").read().split("\0")
    except OSError:
        return []


def _lines(run, *stages) -> int:
    """Whole records written so far (a line being appended is not counted until its newline)."""
    return sum((run / f"{s}.jsonl").read_bytes().count(b"\n") for s in stages or ("greedy", "teach", "exam")
               if (run / f"{s}.jsonl").exists())


def _records(run) -> dict:
    return {s: [json.loads(x)["key"] for x in open(run / f"{s}.jsonl")] if (run / f"{s}.jsonl").exists() else []
            for s in ("greedy", "teach", "exam")}


@pytest.mark.integration
def test_two_embedded_replicas_one_sigkilled_mid_run_nothing_lost_both_hit_rates_reported(tmp_path):
    families, pairs, exam_problems = 8, 3, 2  # 80 calls: the run outlasts the wait for the victim to be read
    cfg = yaml.safe_load(open("configs/demo.yaml"))
    entry = {"model_type": "embedded", "model_cfg": {"replicas": 2}}
    cfg.update(teacher_model_cfg=entry, student_model_cfgs=[entry], num_pairs=pairs, concurrency=4, cache=False,
               dataset_cfg={"num_families": families, "num_variants": 3, "seed": 0}, num_retries=2,
               exam_maker_cfg={"num_exam_questions": exam_problems, "num_repetitions": 1})
    for key in ("teacher_sample_cfg", "general_student_sample_cfg"):
        cfg[key] = {**cfg[key], "max_new_tokens": 32}
    path, run = tmp_path / "cfg.yaml", tmp_path / "run"
    path.write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1"}  # two servers on a small machine
    proc = subprocess.Popen(LBT + ["m1", str(path), "--output-path", str(run), "-q"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    groups: list[int] = []
    try:
        # Both servers up (lbt started them: its guards' children running vLLM's api_server), then the run's first
        # record; 8 s later (the watch has read every replica at least once since), SIGKILL one server process.
        deadline = time.monotonic() + 600
        servers: list[int] = []
        while len(servers) < 2 and proc.poll() is None and time.monotonic() < deadline:
            servers = [p for p in _descendants(proc.pid) if "vllm.entrypoints.openai.api_server" in _cmdline(p)
                       and not any(a.endswith("server_guard.py") for a in _cmdline(p))]
            time.sleep(0.2)
        groups = [os.getpgid(p) for p in servers]
        first = None
        while proc.poll() is None and time.monotonic() < deadline:
            first = first or (time.monotonic() if _lines(run) else None)
            if first and time.monotonic() - first >= 8 and _lines(run, "exam"):
                break
            time.sleep(0.1)
        victim = servers[1]
        port = _cmdline(victim)[_cmdline(victim).index("--port") + 1]
        # The victim has served prompts, and the run's watch (every 5 s) has read it since: its last reading
        # then holds queries, whichever replica the router happened to favour so far.
        served = None
        while proc.poll() is None and time.monotonic() < deadline:
            counts = prefix_cache_counts(f"http://127.0.0.1:{port}/metrics")
            if counts and counts["queries"] > 0:
                served = served or time.monotonic()
                if time.monotonic() - served >= 6:
                    break
            time.sleep(0.2)
        assert proc.poll() is None, f"the run ended before the kill: {proc.communicate()}"
        done_at_kill = _lines(run)
        os.kill(victim, signal.SIGKILL)
        t_kill = time.monotonic()
        out, err = proc.communicate(timeout=600)
        after_kill = time.monotonic() - t_kill
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        gone_by = time.monotonic() + 5  # SIGKILLed processes take a moment to exit
        while any(_group_alive(g) for g in groups) and time.monotonic() < gone_by:
            time.sleep(0.1)
        leftovers = {g: _group_alive(g) for g in groups}
        for g, pids in leftovers.items():  # never leave a server behind, whatever failed above
            for p in pids:
                try:
                    os.kill(p, signal.SIGKILL)
                except ProcessLookupError:
                    pass
    print(f"\nkilled replica :{port} with {done_at_kill} records written; the run ended {after_kill:.0f} s later")
    print(out)
    assert proc.returncode == 0, err[-2000:]
    assert not any(leftovers.values()), f"server processes outlived lbt: {leftovers}"

    # Every record once: nothing lost, nothing twice.
    total = {"greedy": families, "teach": families * pairs, "exam": families * pairs * exam_problems}
    keys = _records(run)
    assert {s: len(k) for s, k in keys.items()} == total
    assert all(len(set(k)) == len(k) for k in keys.values())
    assert done_at_kill < sum(total.values())  # the kill came mid-run
    assert f"LM calls this run: {sum(total.values())} " in out

    # Both replicas' prefix-cache hit rates and their total: printed, engine.json, summary.json, report.md.
    killed = f"http://127.0.0.1:{port}/v1"
    cache = json.loads((run / "engine.json").read_text())["prefix_cache"]
    by_base = {r["api_base"]: r for r in cache["replicas"]}
    assert len(by_base) == 2 and killed in by_base
    live = next(r for b, r in by_base.items() if b != killed)
    assert by_base[killed]["state"] == "down" and by_base[killed]["queries"] > 0  # read before it died
    assert live["state"] == "live" and live["queries"] > 0
    assert cache["queries"] == live["queries"] + by_base[killed]["queries"]
    assert cache["hits"] == live["hits"] + by_base[killed]["hits"]
    lines = prefix_cache_lines(cache)
    assert lines[0].startswith("vLLM prefix cache: ") and lines[0].endswith("(2 replicas)")
    for line in lines:
        assert line in out
    assert any(killed in x and "as of its last reading" in x for x in lines)
    assert json.loads((run / "summary.json").read_text())["engine"]["prefix_cache"] == cache
    report = (run / "report.md").read_text()
    assert "## Engine" in report and all(line in report for line in lines)
