"""P2: adaptive exams — how many student generations does M1 need to make the full exam's pick?

Replays saved full-exam results (no LM): for each budget setting the racing scheduler
(`lbt_dspy.adaptive.AdaptiveExam`) reveals exam results only where it asks for them; the pick it
ends with (M1 MAX and M1 SUM, from the mean over the exam problems taken, as `lbt select` computes
it) is compared with the full exam's pick. Printed per data set and budget: the fraction of student
generations used, agreement with the full-exam pick (all problems, and the contested ones: two or
more answer groups), and accuracy. A uniform cut (every pair takes its first k exam problems) is the
baseline. The curves are drawn to a PNG.

Data sets:
  - real: a saved `lbt m1` run (default eval/replay/demo: SmolLM2-135M teaching itself on the demo's
    arithmetic task, 9 exam problems = 3 variants x 3 repetitions per pair);
  - synthetic, with known ground truth (`eval/synthetic_exams.py`): the paper's scale
    (181 problems x 256 TR-TA pairs x 9 exam problems) with a weak and a strong teacher, and 24 pairs
    (the paper's Table A6 budget).

Target: the full-exam pick on >= 95% of problems with <= 35% of the student generations.

Usage:
    python eval/bench_adaptive.py [--replay eval/replay/demo] [--quick] [--plot eval/bench_adaptive.png]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "eval"))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from lbt_dspy.m1.adaptive import AdaptiveExam, pick, replay  # noqa: E402
from synthetic_exams import synthetic_problems  # noqa: E402
from lbt_dspy.m1.results import pair_index  # noqa: E402
from lbt_dspy.m1.select import METHODS, Pair  # noqa: E402

RACED = ("M1 MAX", "M1 SUM")
CONFIDENCES = (1.0, 0.99, 0.95, 0.9, 0.8, 0.7, 0.5)


def load_replay(run_dir: Path) -> list[dict]:
    """Problems of a saved run with a complete exam: answer groups, full results, correctness per pair."""
    from lbt_dspy.config import M1Config
    from lbt_dspy.m1.results import memo_equivalent
    from lbt_dspy.scoring import exam_scorers
    from lbt_dspy.m1.select import group_answers
    from lbt_dspy.store import RunStore

    store = RunStore(run_dir)
    cfg = M1Config.from_dict(store.read_config(), str(run_dir / "config.yaml"))
    eq = memo_equivalent(exam_scorers.build(vars(cfg)).equivalent)
    teach, exam = store.load("teach"), store.load("exam")
    students = sorted({r["student"] for r in exam.values()})
    slots = max((r["slot"] for r in exam.values()), default=-1) + 1
    by_pair: dict = {}
    for r in exam.values():
        by_pair.setdefault((r["tp"], pair_index(r)), {})[(r["student"], r["slot"])] = r["score"]
    problems = []
    for tp in sorted({r["tp"] for r in teach.values()}):
        rows = sorted((r for r in teach.values() if r["tp"] == tp), key=lambda r: r["sample"])
        full, answers, correct = [], [], []
        for r in rows:
            got = by_pair.get((tp, r["sample"]), {})
            if len(got) < slots * len(students):
                break  # an incomplete exam: not replayable
            full.append([sum(got[(s, k)] for s in students) / len(students) for k in range(slots)])
            answers.append(r["answer"])
            correct.append(r["score"] >= 1.0)
        else:
            gid = [None] * len(answers)
            for g, members in enumerate(group_answers(answers, eq)):
                for j in members:
                    gid[j] = g
            problems.append({"groups": gid, "full": full, "correct": correct, "tp": tp})
    return problems


def group_correct(p: dict, g) -> bool:
    if g is None:
        return False
    if "right_group" in p:
        return g == p["right_group"]
    return any(c for c, gg in zip(p["correct"], p["groups"]) if gg == g)


def evaluate(problems: list[dict], run) -> dict:
    """Fraction of generations, agreement with the full exam and accuracy for one budget setting."""
    used = total = 0
    agree = {m: 0 for m in RACED}
    agree_c = {m: 0 for m in RACED}
    acc = {m: 0 for m in RACED}
    contested = 0
    for p in problems:
        obs = run(p)
        used += sum(v is not None for row in obs for v in row)
        total += sum(len(row) for row in p["full"])
        is_contested = len({g for g in p["groups"] if g is not None}) > 1
        contested += is_contested
        for m in RACED:
            g = pick(m, p["groups"], obs)
            same = g == pick(m, p["groups"], p["full"])
            agree[m] += same
            agree_c[m] += same and is_contested
            acc[m] += group_correct(p, g)
    n = len(problems)
    return {"fraction": used / total if total else 0.0, "agree": {m: agree[m] / n for m in RACED},
            "agree_contested": {m: agree_c[m] / contested if contested else 1.0 for m in RACED},
            "accuracy": {m: acc[m] / n for m in RACED}, "contested": contested, "n": n}


def baselines(problems: list[dict]) -> dict:
    sc = 0
    for p in problems:
        best = METHODS["SC"]([Pair("" if g is None else f"g{g}", 0.0, i) for i, g in enumerate(p["groups"])],
                             lambda a, b: a == b)
        sc += group_correct(p, None if best is None else p["groups"][best.index])
    return {"SC": sc / len(problems)}


def bench(name: str, problems: list[dict], confidences, plot_rows: dict) -> dict:
    slots = len(problems[0]["full"][0])
    pairs = sum(len(p["groups"]) for p in problems) / len(problems)
    t = time.perf_counter()
    full = evaluate(problems, lambda p: p["full"])
    print(f"\n== {name}: {len(problems)} problems, {pairs:.0f} pairs each, {slots} exam problems per pair; "
          f"{full['contested']} contested (two or more answer groups)")
    print(f"   full exam accuracy: M1 MAX {full['accuracy']['M1 MAX']:.3f}, M1 SUM {full['accuracy']['M1 SUM']:.3f}; "
          f"SC {baselines(problems)['SC']:.3f}")
    print(f"   {'budget':26s} {'gen. used':>9s} {'agree MAX':>9s} {'agree SUM':>9s} {'(contested MAX/SUM)':>19s} "
          f"{'acc MAX':>7s} {'acc SUM':>7s}")
    rows = []

    def show(label, r):
        print(f"   {label:26s} {r['fraction']:9.3f} {r['agree']['M1 MAX']:9.3f} {r['agree']['M1 SUM']:9.3f} "
              f"{r['agree_contested']['M1 MAX']:9.3f}/{r['agree_contested']['M1 SUM']:.3f}   "
              f"{r['accuracy']['M1 MAX']:7.3f} {r['accuracy']['M1 SUM']:7.3f}")
    uniform = []
    for k in range(1, slots + 1):
        r = evaluate(problems, lambda p, k=k: [row[:k] + [None] * (slots - k) for row in p["full"]])
        uniform.append(r)
        show(f"uniform: first {k} of {slots}", r)
    for conf in confidences:
        sched = AdaptiveExam(num_slots=slots, initial=1, confidence=conf)
        r = evaluate(problems, lambda p, s=sched: replay(p["groups"], p["full"], s))
        r["confidence"] = conf
        rows.append(r)
        show(f"adaptive: confidence {conf}", r)
    ok = [r for r in rows if min(r["agree"].values()) >= 0.95]
    best = min(ok, key=lambda r: r["fraction"]) if ok else None
    if best:
        print(f"   -> full-exam pick (MAX and SUM) on >= 95% of problems with {best['fraction']:.1%} of the student "
              f"generations (confidence {best['confidence']}); target <= 35%: "
              f"{'met' if best['fraction'] <= 0.35 else 'NOT met'}   [{time.perf_counter() - t:.0f} s]")
    else:
        print("   -> no adaptive setting reached 95% agreement")
    plot_rows[name] = {"adaptive": rows, "uniform": uniform}
    return {"best": best, "rows": rows}


def draw(plot_rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, method in zip(axes, RACED):
        for i, (name, data) in enumerate(plot_rows.items()):
            color = f"C{i}"
            ad = sorted(data["adaptive"], key=lambda r: r["fraction"])
            ax.plot([r["fraction"] for r in ad], [r["agree"][method] for r in ad], "o-", color=color, label=f"{name}: adaptive")
            ax.plot([r["fraction"] for r in data["uniform"]], [r["agree"][method] for r in data["uniform"]], "x:",
                    color=color, alpha=0.6, label=f"{name}: uniform cut")
        ax.axhline(0.95, color="grey", lw=0.8, ls="--")
        ax.axvline(0.35, color="grey", lw=0.8, ls="--")
        ax.set_xlabel("fraction of the full exam's student generations")
        ax.set_title(f"{method}: agreement with the full-exam pick")
        ax.set_xlim(0, 1.02)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("problems with the full exam's pick")
    axes[1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"\ncurve: {path}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replay", default=str(ROOT / "eval" / "replay" / "demo"), help="a saved full-exam run directory")
    ap.add_argument("--quick", action="store_true", help="smaller synthetic sets (60 problems)")
    ap.add_argument("--plot", default=str(ROOT / "eval" / "bench_adaptive.png"))
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    n = 60 if args.quick else 181
    plot_rows: dict = {}
    summary = {}
    replay_dir = Path(args.replay)
    if (replay_dir / "exam.jsonl").exists():
        problems = load_replay(replay_dir)
        if problems:
            summary["real"] = bench(f"real: {replay_dir.name} run", problems, CONFIDENCES, plot_rows)
        else:
            print(f"(no problem of {replay_dir} has a complete exam yet; real replay skipped)")
    else:
        print(f"(no saved run at {replay_dir}; real replay skipped)")
    settings = [
        ("synthetic, weak teacher, 256 pairs", dict(num_pairs=256, teacher_skill=0.45, wrong_spread=0.7)),
        ("synthetic, strong teacher, 256 pairs", dict(num_pairs=256, teacher_skill=0.75, wrong_spread=0.5)),
        ("synthetic, weak teacher, 24 pairs", dict(num_pairs=24, teacher_skill=0.45, wrong_spread=0.7)),
    ]
    for name, kw in settings:
        problems = synthetic_problems(n, seed=args.seed, **kw)
        summary[name] = bench(name, problems, CONFIDENCES, plot_rows)
    draw(plot_rows, Path(args.plot))
    print("\nsmallest fraction of student generations with the full-exam pick (MAX and SUM) on >= 95% of problems:")
    for name, s in summary.items():
        b = s["best"]
        found = "-" if b is None else "{:.1%} (confidence {})".format(b["fraction"], b["confidence"])
        print(f"  {name:40s} {found}")


if __name__ == "__main__":
    main()
