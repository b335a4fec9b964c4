"""A client that keeps up: calls/s of one ``m1()`` call on a math181 problem and on an arithmetic problem.

A scripted OpenAI-compatible server (tests/fake_openai.py, in its own process) answers every call after
`--latency` seconds (0.2 s). On math181 it answers in LaTeX (`fake_openai.scripted_math`: the reference, an
equivalent form only a parse finds equal such as ``\\dfrac`` or ``x = 7``, or another problem's reference), so
the answer checks really parse; on arithmetic it answers integers (the `_plain_number` shortcut, no parse).
One ``m1(**tp)`` is `--pairs` teacher calls then `--pairs` x 9 exam calls under ``M1(num_threads=16)``; the
bound is 16 / 0.2 s = 80 calls/s, less the teacher stage's idle slots.

Three ways of checking answers, each timed on its own problems (no problem is timed twice, so no cache is
warm from an earlier timing), in the order before, cache, workers, workers, cache, before, repeated:

  before   every check parses both answers in the calling thread, nothing cached (the code before issue 23);
  cache    in the calling process, each answer parsed once and each verdict kept (``LBT_CHECK_WORKERS=0``);
  workers  the default: checks in worker processes (`lbt_dspy.scoring.math_checks`), cached as well.

It prints, per dataset and way, the median calls/s and this process's CPU per LM call, the ratios to
before, measured in one run; how many checks per call go to math-verify; and the cost of a cold worker
(start + math-verify import + first check). Target: math181 >= 40 calls/s with the workers.
``--odd 0.2``: a fifth of the answers a weak model's (`fake_openai.ODD_ANSWERS`). ``--threads 64 --latency
0.05``: a faster server, where the client's CPU is the bound.

Usage:
    python eval/bench_client.py [--rounds 3] [--pairs 8] [--latency 0.2] [--threads 16] [--odd 0.0]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("BENCH_FAKE_KEY", "x")

import lbt_dspy  # noqa: E402
from lbt_dspy import FunctionalExamMaker, LbTScore, M1, MathScorer, Student, Teacher, TemplateAdapter  # noqa: E402
from lbt_dspy.data import arith_dataset, math181_dataset  # noqa: E402
from lbt_dspy.scoring import math as math_scoring  # noqa: E402
from lbt_dspy.scoring import math_checks  # noqa: E402

MODES = ("before", "cache", "workers")
PARSED: list[int] = []  # per "before" call: the checks that went to math-verify (not settled as text or integers)

SERVER = """
import json, sys
sys.path.insert(0, {tests!r})
from fake_openai import FakeOpenAI, scripted_math
refs = {{}}
for name in ("teaching_problems.jsonl", "exam_problems.jsonl"):
    for line in open({data!r} + "/" + name):
        row = json.loads(line)
        refs[row["problem"]] = row["answer"]
with FakeOpenAI(delay={latency}, answer=scripted_math(refs), odd={odd}) as srv:
    print(srv.api_base, flush=True)
    sys.stdin.read()
"""


def program(args, api_base: str, data) -> M1:
    entry = {"model_type": "openai",
             "model_cfg": {"model": "fake", "api_base": api_base, "api_key_env": "BENCH_FAKE_KEY"}}
    adapter = TemplateAdapter(stub_teaching_items=[])
    lm = lbt_dspy.lm(entry, temperature=0.7, max_tokens=64, cache=False)
    return M1(Teacher(lm=lm, adapter=adapter, num_pairs=args.pairs),
              LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(data.exam_bank, 3, 3), MathScorer()),
              num_threads=args.threads)


@contextmanager
def checking(mode: str):
    """Answer checks as `mode` says, this process's caches emptied first (the workers, started once, stay)."""
    math_scoring._checked.cache_clear()
    math_checks.parse.cache_clear()
    saved = math_scoring._checked, math_checks.check, math_checks.parse
    if mode == "cache":  # what LBT_CHECK_WORKERS=0 does
        math_checks.check = math_checks.check_here
    if mode == "before":  # no cache: the verdict and both parses made anew for every check, in this thread
        def uncached(reference: str, answer: str) -> bool:
            PARSED[-1] += 1
            return math_checks.check_here(reference, answer)

        PARSED.append(0)
        math_scoring._checked, math_checks.parse = uncached, math_checks.parse.__wrapped__
    try:
        yield
    finally:
        math_scoring._checked, math_checks.check, math_checks.parse = saved


def one_call(m1: M1, tp: dict) -> tuple[float, float]:
    """calls/s of one ``m1(**tp)``, and this process's CPU ms per call."""
    t, cpu = time.perf_counter(), time.process_time()
    pred = m1(**tp)
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    calls = len(pred.pairs) + sum(len(e["scores"]) for p in pred.pairs for e in p.exam.values())
    return calls / wall, 1e3 * cpu / calls


def cold_worker() -> float:
    """Seconds from nothing to a first verdict of a fresh worker."""
    t = time.perf_counter()
    with math_checks.CheckWorkers(1) as pool:
        pool.check("\\frac{3}{4}", "0.75")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="rounds of 6 timed calls per dataset (2 per mode)")
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--odd", type=float, default=0.0,
                    help="fraction of answers a weak model's (fake_openai.ODD_ANSWERS)")
    args = ap.parse_args()
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    server = SERVER.format(tests=str(ROOT / "tests"), latency=args.latency, odd=args.odd,
                           data=str(ROOT / "data" / "math181"))
    srv = subprocess.Popen([sys.executable, "-c", server], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    workers = math_checks.default_workers() or 1
    math_checks.configure(workers)
    n = 6 * args.rounds + 1
    order = [MODES[i] for i in (0, 1, 2, 2, 1, 0)] * args.rounds
    rows, load = [], [os.getloadavg()[0]]
    try:
        api_base = srv.stdout.readline().strip()
        math = math181_dataset()  # the problems whose references are not plain integers: the checks parse
        latex = [tp for tp in math.teaching if not tp["answer"].strip().lstrip("-").isdigit()][:n]
        arith = arith_dataset(num_families=n, num_variants=3, seed=0)
        for name, data, tps in (("math181", math, latex), ("arith", arith, arith.teaching[:n])):
            if len(tps) < n:
                raise SystemExit(f"{name}: {len(tps)} problems, {n} needed (--rounds {args.rounds})")
            m1 = program(args, api_base, data)
            for mode in ("workers", "before"):  # warm-up: imports, connections, the workers' start
                with checking(mode):
                    one_call(m1, tps[0])
            PARSED.clear()
            got = {m: [] for m in MODES}
            for mode, tp in zip(order, tps[1:]):
                with checking(mode):
                    got[mode].append(one_call(m1, tp))
            rows.append((name, got, statistics.median(PARSED)))
            PARSED.clear()
            load.append(os.getloadavg()[0])
        cold = cold_worker()
    finally:
        srv.stdin.close()
        srv.wait(10)
        math_checks.configure(None)
    print(f"one m1() call: {args.pairs} pairs x 9 exam problems ({args.pairs * 10} calls); latency {args.latency} s; "
          f"num_threads {args.threads}; bound {args.threads / args.latency:.0f} calls/s")
    print(f"{os.cpu_count()} cores, {workers} check workers; load average {' -> '.join(f'{x:.1f}' for x in load)}; "
          f"{2 * args.rounds} problems per dataset and mode; a cold worker's first verdict {cold:.2f} s")
    for name, got, parsed in rows:
        med = {m: statistics.median(x for x, _ in v) for m, v in got.items()}
        for m in MODES:
            print(f"  {name:8s} {m:8s} {med[m]:5.1f} calls/s  (each: {', '.join(f'{x:.1f}' for x, _ in got[m])});  "
                  f"client CPU {statistics.median(c for _, c in got[m]):.1f} ms per call")
        print(f"  {name:8s} checks that parse (math-verify): {parsed:.0f} per call (median); exam answers: "
              f"{args.pairs * 9}")
        target = "   (target: workers >= 40 calls/s)" if name == "math181" else ""
        print(f"  {name:8s} workers/before {med['workers'] / med['before']:.2f}, cache/before "
              f"{med['cache'] / med['before']:.2f}{target}")


if __name__ == "__main__":
    main()
