"""Replicas: how `lbt m1`'s throughput grows with vLLM replicas, and which router keeps their prefix caches warm.

The same M1 run (a paper-shaped config, scaled down: problems x TR-TA pairs x exam problems x students; the
paper's math prompt with its four stub shots) is replayed through the real client path (`run_m1`: the `M1`
module, the run's `CallPool`, DSPy, the engine and the router) against N simulated vLLM replicas on loopback
(`eval/sim_replica.py`: a batch limit of K requests, a prefix cache of 16-token blocks, prefill and decode
charged in slept seconds, in a process of their own). Rows, each with fresh replicas (cold caches):

- ``direct`` at N=1: one replica, no router (the baseline of every ratio);
- ``lbt least-loaded`` and ``lbt affinity``: lbt's `RoutedEngine` over the N replicas (``model_cfg.routing``);
- ``vllm-router round_robin``, ``vllm-router cache_aware`` (its defaults; not a default row: it sends every
  request to one replica here) and ``vllm-router cache_aware tuned``: the PyPI ``vllm-router`` (a Rust binary,
  ``python -m venv /work/venv-vrouter && /work/venv-vrouter/bin/pip install vllm-router``) in front of the same
  replicas, lbt sending every request to it (one ``api_base``). Not installed or not running: the rows are
  skipped and the output says why.

Printed per row: LM calls per second over the run (the run's ``seconds``, servers up to last answer), the ratio
to N=1, that ratio over N (1.0: linear), the same over the middle 80% of answers (``steady``: without the start
and the drain, which a paper-sized run hardly has), the prefix-cache hit rate (cached prompt tokens / prompt
tokens, over the replicas), the replicas' busy fraction (slept seconds / (K x N x run seconds)), lbt's client CPU
per call and the 1-minute load average when the row ended. Every row runs the run's ``concurrency`` =
ceil(``--slack`` x N x K).

Usage:
    python eval/bench_replicas.py            # the default table: 8 x 8 x 3 x 2, about 6 minutes on 2 cores
    python eval/bench_replicas.py --quick    # a small run (the test): N=1,2, lbt's two policies
    python eval/bench_replicas.py --problems 16 --pairs 16 --json out.json   # eval/results/replicas (~25 min)
    python eval/bench_replicas.py --replicas 1,4,8 --policies "vllm-router cache_aware"
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from sim_replica import ReplicaCosts  # noqa: E402

# vllm-router rows: the policy and its flags (cache_aware as it comes, and tuned to this workload: a match counts
# only when a prompt shares its pair's demo, > 90% of it, and the load is balanced once two workers differ by a batch).
ROUTER_FLAGS = {"vllm-router round_robin": ["--policy", "round_robin"],
                "vllm-router cache_aware": ["--policy", "cache_aware"],
                "vllm-router cache_aware tuned": ["--policy", "cache_aware", "--cache-threshold", "0.9",
                                                  "--balance-abs-threshold", "8", "--balance-rel-threshold", "1.2"]}
POLICIES = ("lbt least-loaded", "lbt affinity", *ROUTER_FLAGS)
# The default rows (cache_aware as it comes sends every request to one replica here: `--policies` adds it).
DEFAULT_POLICIES = ("lbt least-loaded", "lbt affinity", "vllm-router round_robin", "vllm-router cache_aware tuned")
VENV_ROUTER = Path("/work/venv-vrouter/bin/vllm-router")


@dataclass(frozen=True)
class Workload:
    """An M1 run's shape: teaching problems, TR-TA pairs per problem, exam problems per pair, students.

    Example:
        >>> Workload(problems=2, pairs=4, exam_problems=3, students=2).calls
        58
    """

    problems: int = 8
    pairs: int = 8
    exam_problems: int = 3
    students: int = 2

    @property
    def calls(self) -> int:
        """LM calls of the run: a greedy answer, the pairs, and every pair's exam for every student."""
        return self.problems * (1 + self.pairs + self.pairs * self.exam_problems * self.students)

    def config(self, api_base, concurrency: int, routing: str | None) -> dict:
        """The `lbt m1` config: every model a ``vllm`` entry at `api_base` (a URL or the replicas' list)."""
        model = {"model": "sim", "api_base": api_base, "timeout": 600}
        if routing:
            model["routing"] = routing
        sample = {"temperature": 0.7, "top_k": 20, "max_new_tokens": 512}
        return {"teacher_model_cfg": {"model_type": "vllm", "model_cfg": model}, "teacher_sample_cfg": sample,
                "student_model_cfgs": [{"model_type": "vllm", "model_cfg": {**model, "name": f"student-{i}"}}
                                       for i in range(self.students)],
                "general_student_sample_cfg": sample, "dataset_type": "arith",
                "dataset_cfg": {"num_families": self.problems, "num_variants": self.exam_problems, "seed": 0},
                "num_pairs": self.pairs, "exam_maker_type": "func",
                "exam_maker_cfg": {"num_exam_questions": self.exam_problems, "num_repetitions": 1},
                "concurrency": concurrency, "cache": False, "num_retries": 2}


@dataclass(frozen=True)
class Row:
    """One measured run."""

    policy: str
    replicas: int
    concurrency: int
    calls: int
    seconds: float
    hit_rate: float
    busy: float
    client_cpu_ms: float
    steady_calls_per_s: float
    load: float
    per_replica: list = field(default_factory=list)
    profile: list = field(default_factory=list)

    @property
    def calls_per_s(self) -> float:
        return self.calls / self.seconds


class Replicas:
    """N simulated replicas in a child process (`eval/sim_replica.py`), stopped on exit."""

    def __init__(self, n: int, costs: ReplicaCosts):
        self.proc = subprocess.Popen([sys.executable, str(ROOT / "eval" / "sim_replica.py"), "--replicas", str(n),
                                      "--costs", json.dumps(asdict(costs))],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.api_bases = json.loads(self.proc.stdout.readline())["api_bases"]

    def stats(self) -> list[dict]:
        return [json.loads(urllib.request.urlopen(b + "/stats?spans=1", timeout=10).read()) for b in self.api_bases]

    def __enter__(self) -> "Replicas":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmRouter:
    """The ``vllm-router`` binary in front of `api_bases` with `flags` (its policy), stopped on exit."""

    def __init__(self, binary: str, api_bases: list[str], flags: list[str], log_path: str):
        self.port = _free_port()
        workers = [b.removesuffix("/v1") for b in api_bases]
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen([binary, "--worker-urls", *workers, *flags, "--host", "127.0.0.1",
                                      "--port", str(self.port), "--prometheus-port", str(_free_port()),
                                      "--log-level", "warning"], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=1).read()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"vllm-router did not start (log: {log_path})") from None
                time.sleep(0.1)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> "VllmRouter":
        return self

    def __exit__(self, *exc) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self.log.close()


def router_binary(path: str | None) -> tuple[str | None, str]:
    """The ``vllm-router`` executable, or None and why there is none."""
    for cand in [path, shutil.which("vllm-router"), str(VENV_ROUTER)]:
        if cand and Path(cand).exists():
            try:
                subprocess.run([cand, "--help"], capture_output=True, timeout=60, check=True)
                return cand, ""
            except Exception as exc:  # installed but does not run here
                return None, f"{cand} does not run: {type(exc).__name__}: {str(exc)[:120]}"
    return None, ("vllm-router is not installed (python -m venv /work/venv-vrouter && "
                  "/work/venv-vrouter/bin/pip install vllm-router)")


def run_row(policy: str, n: int, work: Workload, costs: ReplicaCosts, slack: float, router: str | None,
            tmp: str) -> Row:
    """One run of M1 over `n` fresh replicas, routed by `policy`."""
    from lbt_dspy.config import M1Config
    from lbt_dspy.m1 import run_m1

    concurrency = math.ceil(slack * n * costs.capacity)
    with Replicas(n, costs) as sim:
        if policy.startswith("vllm-router"):
            ctx = VllmRouter(router, sim.api_bases, ROUTER_FLAGS[policy], os.path.join(tmp, f"router-{n}.log"))
            api_base = ctx.api_base
            routing = None
        else:
            ctx = None
            api_base = sim.api_bases if n > 1 else sim.api_bases[0]
            routing = {"lbt least-loaded": "least_loaded", "lbt affinity": "affinity"}.get(policy) if n > 1 else None
        try:
            cfg = M1Config.from_dict(work.config(api_base, concurrency, routing))
            out = os.path.join(tmp, f"run-{policy.replace(' ', '_')}-{n}")
            cpu = time.process_time()
            calls = run_m1(cfg, out, progress=False)
            cpu = time.process_time() - cpu
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        stats = sim.stats()
    made = calls["greedy"] + calls["teach"] + calls["exam"]
    if calls["failed"] or made != work.calls:
        raise SystemExit(f"{policy} N={n}: {made} calls of {work.calls}, {calls['failed']} failed: {calls['error']}")
    seconds = calls["seconds"]
    tokens = sum(s["prompt_tokens"] for s in stats)
    return Row(policy, n, concurrency, made, seconds, sum(s["hit_tokens"] for s in stats) / max(tokens, 1),
               sum(s["busy_s"] for s in stats) / (costs.capacity * n * seconds), 1000 * cpu / made,
               steady_rate(stats), os.getloadavg()[0], [s["requests"] for s in stats],
               busy_profile(stats, n * costs.capacity))


def steady_rate(stats: list[dict]) -> float:
    """Answers per second between the 10th and the 90th percentile answer: the run without its start and its
    tail (which a paper-sized run, hundreds of thousands of calls, hardly has)."""
    ends = sorted(b for s in stats for _, b in s["spans"])
    lo, hi = int(0.1 * len(ends)), int(0.9 * len(ends))
    return (hi - lo) / max(ends[hi] - ends[lo], 1e-9)


def busy_profile(stats: list[dict], slots: int, bins: int = 10) -> list[float]:
    """The replicas' busy fraction in each tenth of the run (first admission to last answer)."""
    spans = [sp for s in stats for sp in s["spans"]]
    t0, t1 = min(a for a, _ in spans), max(b for _, b in spans)
    width = (t1 - t0) / bins
    busy = [0.0] * bins
    for a, b in spans:
        for i in range(int((a - t0) / width), min(bins, int((b - t0) / width) + 1)):
            lo, hi = t0 + i * width, t0 + (i + 1) * width
            busy[i] += max(0.0, min(b, hi) - max(a, lo))
    return [x / (slots * width) for x in busy]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", default="1,2,4,8", help="replica counts N (N=1: the direct baseline)")
    ap.add_argument("--policies", default=",".join(DEFAULT_POLICIES),
                    help=f"comma-separated, of: {', '.join(POLICIES)}")
    ap.add_argument("--problems", type=int, default=Workload.problems)
    ap.add_argument("--pairs", type=int, default=Workload.pairs)
    ap.add_argument("--exam-problems", type=int, default=Workload.exam_problems)
    ap.add_argument("--students", type=int, default=Workload.students)
    ap.add_argument("--capacity", type=int, default=ReplicaCosts.capacity, help="K: requests a replica runs at once")
    ap.add_argument("--prefill-ms", type=float, default=1000 * ReplicaCosts.prefill_s,
                    help="ms per uncached prompt token")
    ap.add_argument("--decode-ms", type=float, default=1000 * ReplicaCosts.decode_s, help="ms per generated token")
    ap.add_argument("--gen-tokens", type=int, default=ReplicaCosts.gen_tokens, help="tokens generated per request")
    ap.add_argument("--cache-blocks", type=int, default=ReplicaCosts.cache_blocks, help="prefix cache size (blocks)")
    ap.add_argument("--slack", type=float, default=2.0, help="concurrency = ceil(slack x N x K)")
    ap.add_argument("--vllm-router", help="the vllm-router executable (default: on PATH, else /work/venv-vrouter)")
    ap.add_argument("--quick", action="store_true", help="a small run (a test): N=1,2, lbt's two policies")
    ap.add_argument("--json", help="also write the rows here")
    ap.add_argument("--profile", action="store_true", help="print each row's busy fraction by tenth of the run")
    args = ap.parse_args()
    logging.getLogger("dspy").setLevel(logging.ERROR)
    if args.quick:
        args.replicas, args.problems, args.pairs = "1,2", 3, 4
        args.policies = "lbt least-loaded,lbt affinity"
        args.decode_ms = min(args.decode_ms, 0.5)
        args.prefill_ms = min(args.prefill_ms, 0.1)
    work = Workload(args.problems, args.pairs, args.exam_problems, args.students)
    costs = ReplicaCosts(capacity=args.capacity, prefill_s=args.prefill_ms / 1000, decode_s=args.decode_ms / 1000,
                         gen_tokens=args.gen_tokens, cache_blocks=args.cache_blocks)
    ns = [int(x) for x in args.replicas.split(",")]
    policies = [p.strip() for p in args.policies.split(",") if p.strip()]
    bad = [p for p in policies if p not in POLICIES]
    if bad:
        raise SystemExit(f"unknown policy {bad[0]!r}; one of: {', '.join(POLICIES)}")
    router, why = (None, "")
    if any(p.startswith("vllm-router") for p in policies):
        router, why = router_binary(args.vllm_router)
        if router is None:
            print(f"vllm-router rows skipped: {why}")
            policies = [p for p in policies if not p.startswith("vllm-router")]
    load = os.getloadavg()
    print(f"workload: {work.problems} problems x {work.pairs} pairs x {work.exam_problems} exam problems x "
          f"{work.students} students = {work.calls} LM calls per run")
    print(f"replica: K={costs.capacity} at once, prefill {args.prefill_ms} ms per uncached token, decode "
          f"{args.decode_ms} ms x {costs.gen_tokens} tokens, prefix cache {costs.cache_blocks} blocks of "
          f"{costs.block_tokens} tokens; concurrency = ceil({args.slack} x N x K)")
    print(f"load average at start: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)\n")
    rows: list[Row] = []
    print(f"{'policy':29s} {'N':>2s} {'conc':>5s} {'calls/s':>8s} {'xN=1':>6s} {'/N':>5s} {'steady /N':>9s} "
          f"{'hit rate':>8s} {'busy':>5s} {'cpu ms/call':>11s} {'load':>5s}  requests per replica")
    with tempfile.TemporaryDirectory(prefix="bench-replicas-") as tmp:
        base = None
        todo = [("direct", 1)] if 1 in ns else []
        todo += [(p, n) for p in policies for n in ns if n > 1]
        for policy, n in todo:
            row = run_row(policy, n, work, costs, args.slack, router, tmp)
            rows.append(row)
            base = base or (row if n == 1 else None)
            ratio = row.calls_per_s / base.calls_per_s if base else float("nan")
            steady = row.steady_calls_per_s / base.steady_calls_per_s if base else float("nan")
            print(f"{policy:29s} {n:2d} {row.concurrency:5d} {row.calls_per_s:8.2f} {ratio:6.2f} {ratio / n:5.2f} "
                  f"{steady / n:9.2f} {row.hit_rate:8.3f} {row.busy:5.2f} {row.client_cpu_ms:11.2f} {row.load:5.2f}  "
                  f"{row.per_replica}", flush=True)
            if args.profile:
                print(f"{'':29s} busy by tenth of the run: {' '.join(f'{x:.2f}' for x in row.profile)}")
    load = os.getloadavg()
    print(f"\nload average at end: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if why:
        print(f"vllm-router: {why}")
    if base:
        for p in policies:
            top = max((r for r in rows if r.policy == p), key=lambda r: r.replicas, default=None)
            if top is None:
                continue
            ratio = top.calls_per_s / base.calls_per_s
            hits = [r.hit_rate for r in rows if r.policy == p]
            print(f"{p}: N={top.replicas} makes {ratio:.2f}x the calls/s of N=1 ({ratio / top.replicas:.2f} of linear; "
                  f"target >= 0.90: {'met' if ratio >= 0.9 * top.replicas else 'NOT met'}); hit rate "
                  f"{', '.join(f'{h:.3f}' for h in hits)} vs {base.hit_rate:.3f} at N=1 (target no lower: "
                  f"{'met' if min(hits) >= base.hit_rate else 'NOT met'})")
    if args.json:
        Path(args.json).write_text(json.dumps([{**asdict(r), "calls_per_s": r.calls_per_s} for r in rows], indent=1))


if __name__ == "__main__":
    main()
