"""Per-program overhead of lbt_dspy.sandbox on this machine.

Runs a trivial program (``print(1)``) N times: bare ``python -I -S`` subprocesses (the floor),
sequential ``run_python``, ``run_many`` over all cores, and ``run_many`` in calls mode (how the
code scorer judges a check: the solution, then one call whose result comes back as data);
prints programs/second for each.

Usage:
    python eval/bench_sandbox.py [-n 200] [--workers K]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbt_dspy.sandbox import interpreter, isolation, run_many, run_python  # noqa: E402

TRIVIAL = "print(1)\n"


def rate(n: int, seconds: float) -> str:
    return f"{n / seconds:7.1f} programs/s  ({1000 * seconds / n:6.1f} ms each)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=200, help="programs per measurement")
    ap.add_argument("--workers", type=int, default=os.cpu_count(), help="run_many workers (default: cores)")
    args = ap.parse_args()
    n = args.n

    info = isolation()  # the one-time probe is not part of the timings
    print(f"cores: {os.cpu_count()}  python: {sys.version.split()[0]}  sandbox: {info}")

    t = time.perf_counter()
    for _ in range(n):
        subprocess.run([interpreter(), "-I", "-S", "-c", TRIVIAL], capture_output=True, check=True)
    print(f"bare subprocess, sequential:  {rate(n, time.perf_counter() - t)}")

    t = time.perf_counter()
    for _ in range(n):
        assert run_python(TRIVIAL).stdout == "1\n"
    print(f"run_python, sequential:       {rate(n, time.perf_counter() - t)}")

    t = time.perf_counter()
    results = run_many([TRIVIAL] * n, max_workers=args.workers)
    assert all(r.stdout == "1\n" for r in results)
    print(f"run_many, {args.workers} workers:          {rate(n, time.perf_counter() - t)}")

    t = time.perf_counter()
    results = run_many(["def f(x):\n    return x + 1\n"] * n, max_workers=args.workers,
                       calls=[("f", [[[1], {}]])] * n)
    assert all(r.values == [2] for r in results)
    print(f"run_many calls mode, {args.workers} w.:    {rate(n, time.perf_counter() - t)}")


if __name__ == "__main__":
    main()
