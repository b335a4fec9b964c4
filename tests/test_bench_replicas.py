"""The replica simulation (eval/sim_replica.py) behaves as it says, and eval/bench_replicas.py --quick runs end to
end (no timing is asserted: the numbers are the benchmark's to print)."""

import doctest
import json
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "eval"))

import sim_replica  # noqa: E402
from sim_replica import BatchSlots, PrefixCache, ReplicaCosts, SimReplicas  # noqa: E402


def test_docstring_examples():
    import bench_replicas

    import lbt_dspy.models.router as router

    for mod in (sim_replica, bench_replicas, router):
        failed, tried = doctest.testmod(mod)
        assert tried and not failed, mod.__name__


def test_the_prefix_cache_hits_leading_full_blocks_and_forgets_the_least_recent():
    cache = PrefixCache(capacity=6, block_chars=2)
    assert cache.admit("aabbcc") == 0  # cold: three blocks computed and kept
    assert cache.admit("aabbXX") == 2  # the first two blocks are there, the third differs
    assert cache.admit("bbaa") == 0  # blocks are chained: "bb" after nothing is not "bb" after "aa"
    assert cache.admit("aabbc") == 2  # a partial last block is never a hit
    cache.admit("xxyyzzwwvvuu")  # six new blocks push the older ones out
    assert cache.admit("aabb") == 0


def test_batch_slots_hold_at_most_capacity_and_serve_first_come_first():
    def run(capacity):
        slots, go, order, running, peak = BatchSlots(capacity), threading.Event(), [], [0], [0]
        lock = threading.Lock()

        def job(i):
            slots.acquire()
            with lock:
                running[0] += 1
                peak[0] = max(peak[0], running[0])
                order.append(i)
            go.wait()  # hold the slot until every job has arrived
            with lock:
                running[0] -= 1
            slots.release()

        threads = []
        for i in range(6):
            threads.append(threading.Thread(target=job, args=(i,)))
            threads[-1].start()
            deadline = time.monotonic() + 10
            while len(order) + slots.queued < i + 1 and time.monotonic() < deadline:  # arrived, in order
                time.sleep(0.001)
        go.set()
        for t in threads:
            t.join()
        return peak[0], order

    assert run(2)[0] == 2
    assert run(1) == (1, list(range(6)))  # one at a time, in the order they came


def test_a_replica_answers_openai_requests_counts_its_cache_and_renders_for_vllm_router():
    import openai

    costs = ReplicaCosts(capacity=2, prefill_s=0.0, decode_s=0.0, gen_tokens=8)
    with SimReplicas(2, costs) as sim:
        client = openai.OpenAI(base_url=sim.api_bases[0], api_key="x", max_retries=0)
        shared = "You are a helpful assistant. " * 20
        texts = [client.chat.completions.create(model="sim", messages=[{"role": "user", "content": shared + q}])
                 .choices[0].message.content for q in ("Tom has 3 apples. Tom buys 2 more apples.", "What is 2+2?")]
        assert all("[[Final Answer]]" in t and len(t) >= 8 * costs.chars_per_token - 1 for t in texts)
        first, second = sim.stats()
        assert first["requests"] == 2 and second["requests"] == 0
        assert 0 < first["hit_tokens"] < first["prompt_tokens"] / 2  # the second prompt's shared prefix only
        metrics = urllib.request.urlopen(sim.api_bases[0] + "/metrics").read().decode()
        assert f"vllm:prefix_cache_hits_total {first['hit_tokens']}" in metrics
        req = urllib.request.Request(sim.api_bases[1] + "/chat/completions/render", headers={
            "Content-Type": "application/json"}, data=json.dumps({"model": "sim", "messages": [
                {"role": "user", "content": shared}]}).encode())
        rendered = json.loads(urllib.request.urlopen(req).read())
        assert len(rendered["token_ids"]) > 100 and sim.stats()[1]["requests"] == 0  # rendering is not serving


def test_the_bench_quick_mode_prints_its_table():
    out = subprocess.run([sys.executable, str(ROOT / "eval" / "bench_replicas.py"), "--quick"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith(("direct ", "lbt least-loaded ", "lbt affinity "))]
    assert [r.split()[0] for r in rows] == ["direct", "lbt", "lbt"]
    calls = int(out.stdout.split(" LM calls per run")[0].rsplit("= ", 1)[1])
    for row in rows:  # every call of the run reached a replica once; the hit rate is a fraction
        per_replica = json.loads(row[row.index("["):])
        assert sum(per_replica) == calls and len(per_replica) == (1 if row.startswith("direct") else 2), row
        hit_rate = float(row[:row.index("[")].split()[-4])  # hit rate, busy, cpu ms/call, load
        assert 0 < hit_rate < 1, row
    assert "load average at start" in out.stdout and out.stdout.count("target >= 0.90") == 2
