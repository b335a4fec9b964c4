"""A client that keeps up: calls/s of one ``m1()`` call on a math181 problem and on an arithmetic problem.

A scripted OpenAI-compatible server (tests/fake_openai.py, in its own process) answers every call after
`--latency` seconds (0.2 s). On math181 it answers in LaTeX (`fake_openai.scripted_math`: the reference,
an equivalent form only a parse finds equal such as ``\\dfrac``, or another problem's reference), so the
answer checks really parse; on arithmetic it answers integers (the `_plain_number` shortcut). One
``m1(**tp)`` is `--pairs` teacher calls then `--pairs` x 9 exam calls (`M1(num_threads=16)`); the bound is
16 / 0.2 s = 80 calls/s, less the teacher stage's idle slots.

Each problem is timed with answer checking in this process (``LBT_CHECK_WORKERS=0``: the path before
issue 23) and with the check pool (`lbt_dspy.scoring.checks`), in the order in, pool, pool, in per problem;
the ratio pool/in is of the medians over problems, measured in one run. Target: math181 >= 40 calls/s.

Usage:
    python eval/bench_client.py [--problems 6] [--pairs 8] [--latency 0.2] [--threads 16]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("BENCH_FAKE_KEY", "x")

import lbt_dspy  # noqa: E402
from lbt_dspy import FunctionalExamMaker, LbTScore, M1, MathScorer, Student, Teacher, TemplateAdapter  # noqa: E402
from lbt_dspy.data import arith_dataset, math181_dataset  # noqa: E402
from lbt_dspy.scoring import checks  # noqa: E402

SERVER = """
import json, sys
sys.path.insert(0, {tests!r})
from fake_openai import FakeOpenAI, scripted_math
refs = {{}}
for name in ("teaching_problems.jsonl", "exam_problems.jsonl"):
    for line in open({data!r} + "/" + name):
        row = json.loads(line)
        refs[row["problem"]] = row["answer"]
with FakeOpenAI(delay={latency}, answer=scripted_math(refs)) as srv:
    print(srv.api_base, flush=True)
    sys.stdin.read()
"""


def program(args, api_base: str, data) -> M1:
    entry = {"model_type": "openai", "model_cfg": {"model": "fake", "api_base": api_base, "api_key_env": "BENCH_FAKE_KEY"}}
    adapter = TemplateAdapter(stub_teaching_items=[])
    lm = lbt_dspy.lm(entry, temperature=0.7, max_tokens=64, cache=False)
    return M1(Teacher(lm=lm, adapter=adapter, num_pairs=args.pairs),
              LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(data.exam_bank, 3, 3), MathScorer()),
              num_threads=args.threads)


def one_call(m1: M1, tp: dict, workers: int) -> float:
    """calls/s of one ``m1(**tp)`` with `workers` check processes (0: checks in this process)."""
    checks.configure(workers)
    t = time.perf_counter()
    pred = m1(**tp)
    wall = time.perf_counter() - t
    return (len(pred.pairs) + sum(len(e["scores"]) for p in pred.pairs for e in p.exam.values())) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=6, help="problems of each dataset, each timed 4 times")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    srv = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(ROOT / "tests"), latency=args.latency,
                                                                data=str(ROOT / "data" / "math181"))],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    pool_workers = checks.default_workers()
    rows = []
    try:
        api_base = srv.stdout.readline().strip()
        # math181: the problems with LaTeX references (not plain integers), from the start of the file
        math = math181_dataset()
        latex = [tp for tp in math.teaching if not tp["answer"].strip().isdigit()][:args.problems + 1]
        arith = arith_dataset(num_families=args.problems + 1, num_variants=3, seed=0)
        for name, data, tps in (("math181", math, latex), ("arith", arith, arith.teaching[:args.problems + 1])):
            m1 = program(args, api_base, data)
            one_call(m1, tps[0], pool_workers)  # warm-up: imports, connections, the check pool's start
            one_call(m1, tps[0], 0)
            runs = {0: [], pool_workers: []}
            for tp in tps[1:]:
                for w in (0, pool_workers, pool_workers, 0):
                    runs[w].append(one_call(m1, tp, w))
            rows.append((name, runs[0], runs[pool_workers]))
    finally:
        srv.stdin.close()
        srv.wait(10)
        checks.shutdown()
    print(f"one m1() call: {args.pairs} pairs x 9 exam problems ({args.pairs * 10} calls); latency {args.latency} s; "
          f"num_threads {args.threads}; {args.problems} problems x 2 timings each; bound "
          f"{args.threads / args.latency:.0f} calls/s; cores {os.cpu_count()}; load {os.getloadavg()[0]:.2f}")
    for name, before, after in rows:
        b, a = statistics.median(before), statistics.median(after)
        print(f"{name:8s} checks in process: {b:5.1f} calls/s  (min {min(before):.1f}, max {max(before):.1f})")
        print(f"{name:8s} check pool ({pool_workers} proc): {a:5.1f} calls/s  (min {min(after):.1f}, max {max(after):.1f})"
              f"   ratio {a / b:.2f}" + ("   (target >= 40)" if name == "math181" else ""))


if __name__ == "__main__":
    main()
