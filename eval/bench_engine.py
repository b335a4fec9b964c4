"""The engine, measured: the demo's workload through `transformers serve` (the fallback) and vLLM (the engine).

One run, the same config and calls for both (configs/demo.yaml: its teacher, greedy and student entries, its
sampling settings; DSPy's cache off, a fresh run directory each), on the embedded SmolLM2-135M. For each server
it prints the start-up time, the LM calls per second once the servers are up, and for vLLM its prefix-cache hit
rate (``/metrics``); then the ratio vLLM / transformers. The engines run one after the other, each alone on the
machine; ``--order`` alternates them when ``--repeats`` > 1, so drift favours neither.

Usage:
    python eval/bench_engine.py                       # the demo config as it is
    python eval/bench_engine.py --families 8 --repeats 2 --out eval/results/engine/bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_config(families: int | None, concurrency: int | None) -> dict:
    import yaml

    cfg = yaml.safe_load((ROOT / "configs" / "demo.yaml").read_text())
    if families:
        cfg["dataset_cfg"] = {**cfg["dataset_cfg"], "num_families": families}
    if concurrency:
        cfg["concurrency"] = concurrency
    cfg["cache"] = False  # every call reaches the server
    return cfg


def with_server(cfg: dict, server: str) -> dict:
    """The config with every embedded entry served by `server` (``vllm`` or ``transformers``)."""
    out = json.loads(json.dumps(cfg))
    for key in ("teacher_model_cfg",):
        out[key] = {**out[key], "model_cfg": {**(out[key].get("model_cfg") or {}), "server": server}}
    out["student_model_cfgs"] = [{**e, "model_cfg": {**(e.get("model_cfg") or {}), "server": server}}
                                 for e in out["student_model_cfgs"]]
    return out


def measure(cfg_dict: dict, server: str, progress: bool) -> dict:
    """Start the servers `cfg_dict` needs (timed), then run M1 on them (timed): one engine's numbers."""
    from lbt_dspy.components import build_components, build_m1, build_teacher
    from lbt_dspy.config import M1Config
    from lbt_dspy.m1 import run_m1
    from lbt_dspy.models import ModelPool

    cfg = M1Config.from_dict(with_server(cfg_dict, server))
    with tempfile.TemporaryDirectory(prefix=f"bench-{server}-") as tmp, \
            ModelPool(cache=False, num_retries=cfg.num_retries, log_dir=tmp) as pool:
        t0 = time.monotonic()
        parts = build_components(cfg)
        build_m1(cfg, pool, parts)
        build_teacher(cfg, pool, parts.adapter, greedy=True)  # every server the run needs is up now
        start = time.monotonic() - t0
        calls = run_m1(cfg, Path(tmp) / "run", progress=progress, pool=pool)
        made = calls["greedy"] + calls["teach"] + calls["exam"]
        if calls["failed"]:
            raise SystemExit(f"{server}: {calls['failed']} call(s) failed: {calls['error']}")
        return {"server": server, "servers_started": len(pool._servers), "start_s": round(start, 1),
                "calls": made, "seconds": calls["seconds"], "calls_per_s": round(made / calls["seconds"], 3),
                "prefix_cache": calls.get("prefix_cache")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--families", type=int, help="arithmetic families (default: the demo's)")
    ap.add_argument("--concurrency", type=int, help="calls in flight (default: the demo's)")
    ap.add_argument("--repeats", type=int, default=1, help="runs per engine, alternating (a-b, b-a, ...)")
    ap.add_argument("--servers", default="transformers,vllm", help="which to run (comma-separated)")
    ap.add_argument("--out", help="write the results as JSON here")
    ap.add_argument("-q", "--quiet", action="store_true")
    args = ap.parse_args()
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    cfg = demo_config(args.families, args.concurrency)
    runs = []
    servers = [x for x in ("transformers", "vllm") if x in args.servers.split(",")]
    for r in range(args.repeats):
        order = servers if r % 2 == 0 else servers[::-1]
        for server in order:
            res = measure(cfg, server, not args.quiet)
            runs.append(res)
            print(json.dumps(res), flush=True)
    by = {s: [x for x in runs if x["server"] == s] for s in servers}
    if len(servers) < 2:
        return 0
    rate = {s: statistics.median(x["calls_per_s"] for x in xs) for s, xs in by.items()}
    hits = [x["prefix_cache"] for x in by["vllm"] if x["prefix_cache"]]
    summary = {"config": "configs/demo.yaml", "families": cfg["dataset_cfg"]["num_families"],
               "concurrency": cfg.get("concurrency"), "calls": runs[0]["calls"], "runs": runs,
               "calls_per_s": rate, "ratio_vllm_over_transformers": round(rate["vllm"] / rate["transformers"], 2),
               "vllm_prefix_cache_hit_rate": statistics.median(h["rate"] for h in hits) if hits else None,
               "start_s": {s: statistics.median(x["start_s"] for x in xs) for s, xs in by.items()},
               "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "load_before": os.getloadavg()}
    print(f"\n{summary['calls']} LM calls per run (configs/demo.yaml, {summary['families']} families, "
          f"concurrency {summary['concurrency']}), servers already up:")
    print("| server | start-up (s) | calls/s | prefix-cache hit rate |\n|---|---|---|---|")
    for s in ("transformers", "vllm"):
        hit = summary["vllm_prefix_cache_hit_rate"] if s == "vllm" else None
        print(f"| {s} | {summary['start_s'][s]} | {rate[s]:.2f} | {'' if hit is None else f'{100 * hit:.1f}%'} |")
    print(f"ratio vLLM / transformers serve: {summary['ratio_vllm_over_transformers']:.2f}x (target >= 3)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
