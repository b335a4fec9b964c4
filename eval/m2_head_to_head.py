"""M2 head to head: DPO on LbT-scored pairs against DPO on correctness-scored pairs, from one M1 run.

The paper's M2 comparison (Table 3: LbT-DPO vs Correctness-DPO) at a size a 2-core CPU finishes in an hour:

1. ``lbt m2 pairs RUN`` twice from the same `lbt m1` run: the paper's score (0.5 x correctness + 0.5 x LbT)
   and the correctness-only baseline (``--correctness-only``), same threshold and cap.
2. The same number of pairs from each (the smaller count, or ``--num-pairs``), drawn seeded at random.
3. ``lbt m2 train`` on each with the same config (same base model, same TRL settings, same seed).
4. ``lbt m2 eval`` on held-out problems (another seed of the run's dataset; the report counts any
   overlap with the training problems): greedy accuracy of the base, Correctness-DPO and LbT-DPO, and
   the paired differences with 95% bootstrap intervals (LbT-DPO - Correctness-DPO is the question).

One command; every step is skipped when its output is there, and training resumes from its last
checkpoint, so a killed run is rerun with the same command::

    python eval/m2_head_to_head.py runs/quality320 --out runs/m2_h2h

Writes ``<out>/head_to_head.md`` (the tables, the commands, wall times) beside the steps' own outputs.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lbt_dspy.cli import main as lbt  # noqa: E402

ARMS = ("correctness", "lbt")  # eval order: base, correctness-dpo, lbt-dpo -> lbt-dpo - correctness-dpo
FLAGS = {"correctness": ["--correctness-only"], "lbt": []}


def step(log: list, name: str, argv: list[str], done: Path | None) -> None:
    """Run one `lbt` command unless `done` exists (None: always run); record the command and its wall time."""
    cmd = "lbt " + " ".join(a if " " not in a and "{" not in a else f"'{a}'" for a in argv)
    if done is not None and done.exists():
        log.append({"step": name, "command": cmd, "skipped": True})
        print(f"[{name}] done already ({done})")
        return
    print(f"[{name}] {cmd}", flush=True)
    t0 = time.perf_counter()
    rc = lbt(argv)
    if rc:
        raise SystemExit(rc)
    log.append({"step": name, "command": cmd, "wall_s": round(time.perf_counter() - t0, 1)})


def equal_count(out: Path, n_cap: int, seed: int) -> int:
    """The same number of pairs from each arm: seeded random draws, kept in the pairs' own order."""
    lines = {arm: (out / f"pairs_{arm}" / "pairs.jsonl").read_text(encoding="utf-8").splitlines() for arm in ARMS}
    counts = {arm: len(ls) for arm, ls in lines.items()}
    n = min(counts.values()) if not n_cap else min(n_cap, *counts.values())
    for arm in ARMS:
        target = out / f"pairs_{arm}" / f"equal_{n}.jsonl"
        if target.exists():
            continue
        keep = sorted(random.Random(f"{seed}:{arm}").sample(range(counts[arm]), n))
        tmp = target.with_suffix(".tmp")
        tmp.write_text("".join(lines[arm][i] + "\n" for i in keep), encoding="utf-8")
        tmp.replace(target)
    print(f"pairs: {counts} -> {n} each")
    return n


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="an `lbt m1` run directory (its records give both pair sets)")
    p.add_argument("--out", required=True, help="directory for every step's output and head_to_head.md")
    p.add_argument("--train-config", default="configs/m2_demo_train.yaml")
    p.add_argument("--eval-config", default=None, help="the run's config (default: RUN_DIR/config.yaml)")
    p.add_argument("--num-pairs", type=int, default=192, help="pairs per arm (capped by the smaller set)")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--eval-families", type=int, default=256, help="held-out teaching problems")
    p.add_argument("--eval-seed", type=int, default=1, help="dataset seed of the held-out problems")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    run = Path(a.run_dir)
    eval_cfg = a.eval_config or str(run / "config.yaml")
    log: list = []
    t_start = time.perf_counter()
    for arm in ARMS:
        step(log, f"pairs ({arm})", ["m2", "pairs", str(run), "--output-path", str(out / f"pairs_{arm}"), "-q",
                                     *FLAGS[arm]], out / f"pairs_{arm}" / "pairs_summary.json")
    n = equal_count(out, a.num_pairs, a.seed)
    for arm in ARMS:
        train_dir = out / f"train_{arm}"
        ckpts = sorted(train_dir.glob("checkpoint-*"), key=lambda c: int(c.name.split("-")[-1]))
        step(log, f"train ({arm})",
             ["m2", "train", a.train_config, "--pairs", str(out / f"pairs_{arm}" / f"equal_{n}.jsonl"),
              "--output-dir", str(train_dir), "--set", f"num_train_epochs={a.epochs}", "--set", f"seed={a.seed}",
              "--set", "save_steps=4", "--set", "save_total_limit=1",
              *(["--set", f"resume_from_checkpoint={ckpts[-1]}"] if ckpts else [])],
             train_dir / "train_summary.json")
    dataset_cfg = json.loads(json.dumps(_dataset_cfg(eval_cfg)))
    dataset_cfg["num_families"], dataset_cfg["seed"] = a.eval_families, a.eval_seed
    eval_argv = ["m2", "eval", eval_cfg, "--set", f"dataset_cfg={json.dumps(dataset_cfg)}", "--split", "teaching",
                 *[x for arm in ARMS for x in ("--model", f"{arm}-dpo={out / f'train_{arm}'}")],
                 "--output-path", str(out / "eval")]
    # `lbt m2 eval` resumes from its records itself, so it always runs (a finished one only rereads them)
    step(log, "eval", eval_argv, None)
    wall = time.perf_counter() - t_start
    write_report(out, run, n, a, log, wall)
    print(f"\nwritten {out / 'head_to_head.md'}")
    return 0


def _dataset_cfg(cfg_file: str) -> dict:
    import yaml

    return dict((yaml.safe_load(Path(cfg_file).read_text(encoding="utf-8")) or {}).get("dataset_cfg") or {})


def write_report(out: Path, run: Path, n: int, a, log: list, wall: float) -> None:
    from lbt_dspy.m2.evaluate import console_text

    summary = json.loads((out / "eval" / "eval_summary.json").read_text(encoding="utf-8"))
    trains = {arm: json.loads((out / f"train_{arm}" / "train_summary.json").read_text(encoding="utf-8"))
              for arm in ARMS}
    pairs = {arm: json.loads((out / f"pairs_{arm}" / "pairs_summary.json").read_text(encoding="utf-8"))
             for arm in ARMS}
    lines = [f"# M2 head to head: LbT-DPO vs Correctness-DPO ({n} pairs each)", "",
             f"Pairs from `{run}`: " + "; ".join(f"{arm}: {pairs[arm]['pairs']} kept of {pairs[arm]['qualifying_pairs']}"
                                                 f" qualifying from {pairs[arm]['problems_with_pairs']} problems"
                                                 for arm in ARMS) + f"; {n} drawn from each (seed {a.seed}).",
             "", "Training (same config, same base, same seed): " + "; ".join(
                 f"{arm}: {t['steps']} steps in {t['train_wall_s']:.0f} s, final loss {t['train_loss']:.3f}"
                 for arm, t in trains.items()) + ".", "", "```", console_text(summary).rstrip(), "```", "",
             "## Commands", ""]
    lines += [f"- {e['step']}: `{e['command']}`" + (" (done before)" if e.get("skipped") else f" — {e['wall_s']:.0f} s")
              for e in log]
    lines += ["", f"This invocation: {wall / 60:.1f} min."]
    (out / "head_to_head.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
