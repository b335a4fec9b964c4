"""The Python API is as fast as the CLI: `M1(num_threads=16)` against `lbt m1` (``concurrency: 16``).

A scripted OpenAI-compatible server (tests/fake_openai.py, in its own process) answers every call
after `--latency` seconds (0.2 s). The same problems (arithmetic families, `--pairs` TR-TA pairs x
9 exam problems each) go

  (a) through the Python API: the `M1` module built from `lbt_dspy.lm` entries, `num_threads=16`, all
      problems at once with ``asyncio.gather(*(m1.acall(**tp) ...))``;
  (b) through `lbt m1`'s engine (`run_m1`, ``concurrency: 16``, a fresh run directory: every
      generation recorded; its greedy baseline calls count as calls);
  (c) one ``m1(**tp)`` call on one problem (the unit a user calls; its teacher stage has only
      `--pairs` calls in flight).

It prints calls/s of each and the ratio a/b, measured in one run (passes in the order a, b, b, a; each
side's best pass). Targets: a/b >= 0.9; (c) >= 40 calls/s (the bound: 16 / 0.2 s = 80 calls/s).

Usage:
    python eval/bench_api.py [--families 6] [--pairs 8] [--latency 0.2] [--threads 16]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("BENCH_FAKE_KEY", "x")

import lbt_dspy  # noqa: E402
from lbt_dspy import FunctionalExamMaker, LbTScore, M1, MathScorer, Student, Teacher, TemplateAdapter  # noqa: E402
from lbt_dspy.config import M1Config  # noqa: E402
from lbt_dspy.data import arith_dataset  # noqa: E402
from lbt_dspy.m1 import run_m1  # noqa: E402

SERVER = """
import sys, time
sys.path.insert(0, {tests!r})
from fake_openai import FakeOpenAI
with FakeOpenAI(delay={latency}) as srv:
    print(srv.api_base, flush=True)
    sys.stdin.read()
"""


def entry(api_base: str) -> dict:
    return {"model_type": "openai", "model_cfg": {"model": "fake", "api_base": api_base, "api_key_env": "BENCH_FAKE_KEY"}}


def config(args, api_base: str) -> dict:
    return {"teacher_model_cfg": entry(api_base), "student_model_cfgs": [entry(api_base)],
            "teacher_sample_cfg": {"temperature": 0.7, "max_new_tokens": 64},
            "general_student_sample_cfg": {"temperature": 0.7, "max_new_tokens": 64},
            "dataset_type": "arith", "dataset_cfg": {"num_families": args.families, "num_variants": 3, "seed": 0},
            "num_pairs": args.pairs, "exam_maker_cfg": {"num_exam_questions": 3, "num_repetitions": 3},
            "exam_prompter_cfg": {"stub_teaching_items": []}, "concurrency": args.threads, "cache": False,
            "num_retries": 0}


def api_program(args, api_base: str, data) -> M1:
    adapter = TemplateAdapter(stub_teaching_items=[])
    lm = lbt_dspy.lm(entry(api_base), temperature=0.7, max_tokens=64, cache=False)
    return M1(Teacher(lm=lm, adapter=adapter, num_pairs=args.pairs),
              LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(data.exam_bank, 3, 3), MathScorer()),
              num_threads=args.threads)


def api_pass(m1: M1, items: list[dict]) -> float:
    async def all_problems():
        return await asyncio.gather(*(m1.acall(**tp) for tp in items))

    t = time.perf_counter()
    preds = asyncio.run(all_problems())
    wall = time.perf_counter() - t
    calls = sum(len(p.pairs) + sum(len(e["scores"]) for c in p.pairs for e in c.exam.values())
                for p in preds)
    return calls / wall


def cli_pass(args, api_base: str) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        calls = run_m1(M1Config.from_dict(config(args, api_base)), Path(tmp) / "run", progress=False)
        wall = time.perf_counter() - t
    if calls["failed"]:
        raise SystemExit(f"failed calls: {calls}")
    return (calls["greedy"] + calls["teach"] + calls["exam"]) / wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", type=int, default=6)
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--latency", type=float, default=0.2)
    ap.add_argument("--threads", type=int, default=16)
    args = ap.parse_args()
    import logging

    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    srv = subprocess.Popen([sys.executable, "-c", SERVER.format(tests=str(ROOT / "tests"), latency=args.latency)],
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        api_base = srv.stdout.readline().strip()
        data = arith_dataset(num_families=args.families, num_variants=3, seed=0)
        m1 = api_program(args, api_base, data)
        m1(**data.teaching[0])  # warm-up: imports, tokenizer-free chat path, connections
        a, b = [], []
        for which in "abba":
            (a if which == "a" else b).append(api_pass(m1, data.teaching) if which == "a" else cli_pass(args, api_base))
        t = time.perf_counter()
        pred = m1(**data.teaching[1])
        one = (len(pred.pairs) * (1 + 9)) / (time.perf_counter() - t)
    finally:
        srv.stdin.close()
        srv.wait(10)
    per = args.pairs * 10
    print(f"{args.families} problems x {args.pairs} pairs x 9 exam problems; latency {args.latency} s; "
          f"num_threads / concurrency {args.threads}")
    print(f"(a) Python API, M1 + acall:   {max(a):6.1f} calls/s  (passes: {', '.join(f'{x:.1f}' for x in a)})")
    print(f"(b) lbt m1 (run_m1):          {max(b):6.1f} calls/s  (passes: {', '.join(f'{x:.1f}' for x in b)})")
    print(f"ratio a/b: {max(a) / max(b):.3f}   (target >= 0.9)")
    print(f"(c) one m1() call, one problem ({per} calls): {one:.1f} calls/s   (target >= 40; bound "
          f"{args.threads / args.latency:.0f})")


if __name__ == "__main__":
    main()
