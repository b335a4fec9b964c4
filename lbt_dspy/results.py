"""From a run directory's records to LbT scores, M1 picks and accuracies (no LM calls)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from statistics import mean

from .config import LbtConfig
from .errors import LbtError
from .scoring import exam_scorers
from .select import METHODS, Candidate
from .store import RunStore

COMBINED = "combined"


def memo_equivalent(equivalent):
    """`equivalent` with a cache: voting and subsampling compare the same answers many times."""
    cache: dict = {}

    def eq(a: str, b: str) -> bool:
        key = (a, b)
        if key not in cache:
            cache[key] = a.strip() == b.strip() or equivalent(a, b)
        return cache[key]
    return eq


def load_run(run_dir: str | Path) -> tuple[LbtConfig, dict]:
    """The run's config and, per teaching problem, its greedy record, pairs and their exam scores."""
    store = RunStore(run_dir)
    cfg = LbtConfig.from_dict(store.read_config(), str(Path(run_dir) / "config.yaml"))
    greedy, teach, exam = store.load("greedy"), store.load("teach"), store.load("exam")
    if not teach:
        raise LbtError(f"{run_dir}: no teacher records yet (teach.jsonl is empty or missing)")
    problems: dict[str, dict] = defaultdict(lambda: {"pairs": {}, "greedy": None})
    for rec in greedy.values():
        problems[rec["tp"]]["greedy"] = rec
    for rec in teach.values():
        problems[rec["tp"]]["pairs"][rec["sample"]] = {**rec, "exam": defaultdict(list)}
    for rec in exam.values():
        pair = problems[rec["tp"]]["pairs"].get(rec["sample"])
        if pair is not None:
            pair["exam"][rec["student"]].append(rec["score"])
    return cfg, dict(problems)


def candidates_for(problem: dict, student: str) -> list[Candidate]:
    """The problem's TR-TA pairs with the LbT score of one student (or combined: mean over students)."""
    cands = []
    for i, pair in sorted(problem["pairs"].items()):
        per = {s: mean(v) for s, v in pair["exam"].items() if v}
        if student == COMBINED:
            score = mean(per.values()) if per else 0.0
        else:
            score = per.get(student, 0.0)
        cands.append(Candidate(pair["answer"], score, i))
    return cands


def summarize(run_dir: str | Path) -> dict:
    """Accuracy of Greedy, SC, M1 MAX, M1 SUM and AVG per student and combined; per-problem picks."""
    cfg, problems = load_run(run_dir)
    scorer = exam_scorers.build(vars(cfg))
    eq = memo_equivalent(scorer.equivalent)
    students = sorted({s for p in problems.values() for pair in p["pairs"].values() for s in pair["exam"]})
    views = students + ([COMBINED] if len(students) > 1 else [])
    expected_exam = None
    per_problem, correct = [], defaultdict(list)
    for tp, prob in sorted(problems.items()):
        row = {"tp": tp, "greedy": prob["greedy"]["answer"] if prob["greedy"] else None, "picks": {}}
        if prob["greedy"]:
            correct[("Greedy", None)].append(prob["greedy"]["score"])
        pair_scores = [pair["score"] for pair in prob["pairs"].values()]
        correct[("AVG", None)].append(mean(pair_scores))
        by_index = {i: pair for i, pair in prob["pairs"].items()}
        sc = METHODS["SC"](candidates_for(prob, views[0]) if views else [], eq)
        correct[("SC", None)].append(by_index[sc.index]["score"] if sc else 0.0)
        row["picks"]["SC"] = sc.answer if sc else None
        for view in views:
            cands = candidates_for(prob, view)
            for method in ("M1 MAX", "M1 SUM"):
                pick = METHODS[method](cands, eq)
                correct[(method, view)].append(by_index[pick.index]["score"] if pick else 0.0)
                row["picks"][f"{method} [{view}]"] = pick.answer if pick else None
            row.setdefault("lbt_scores", {})[view] = [round(c.lbt_score, 4) for c in cands]
        row["pair_correct"] = [by_index[i]["score"] for i in sorted(by_index)]
        per_problem.append(row)
        for pair in prob["pairs"].values():
            n = sum(len(v) for v in pair["exam"].values())
            expected_exam = n if expected_exam is None else max(expected_exam, n)
    table = {}
    for (method, view), vals in correct.items():
        table.setdefault(method, {})[view or "all"] = {"accuracy": mean(vals), "correct": sum(vals), "n": len(vals)}
    return {"students": students, "views": views, "num_problems": len(problems), "table": table,
            "problems": per_problem, "curve": pairs_curve(problems, views, eq, cfg)}


def pairs_curve(problems: dict, views: list[str], eq, cfg: LbtConfig) -> dict:
    """Accuracy vs number of TR-TA pairs: mean over random subsets of the pairs of each problem."""
    n_max = max((len(p["pairs"]) for p in problems.values()), default=0)
    sizes = cfg.subsample_sizes or sorted({min(2 ** k, n_max) for k in range(0, n_max.bit_length() + 1)} | {n_max})
    sizes = [s for s in sizes if 1 <= s <= n_max]
    rng = random.Random(cfg.seed)
    view = views[-1] if views else None
    out = {"sizes": sizes, "view": view, "SC": [], "M1 MAX": [], "M1 SUM": []}
    for size in sizes:
        acc = defaultdict(list)
        for _ in range(cfg.subsample_repeats if size < n_max else 1):
            for prob in problems.values():
                cands = candidates_for(prob, view) if view else []
                if not cands:
                    continue
                sub = rng.sample(cands, min(size, len(cands)))
                by_index = prob["pairs"]
                for method in ("SC", "M1 MAX", "M1 SUM"):
                    pick = METHODS[method](sub, eq)
                    acc[method].append(by_index[pick.index]["score"] if pick else 0.0)
        for method in ("SC", "M1 MAX", "M1 SUM"):
            out[method].append(mean(acc[method]) if acc[method] else 0.0)
    return out
