"""From a run directory's records to LbT scores, M1 picks and accuracies (no LM calls)."""

from __future__ import annotations

import random
from collections import defaultdict
from pathlib import Path
from statistics import mean

from ..config import M1Config
from ..errors import LbtError
from ..scoring import exam_scorers
from ..lbt_score import lbt_scores
from ..model_output import OutputCounts
from ..tasks import task_for
from .select import METHODS, Pair, m1_max
from ..store import RunStore

COMBINED = "combined"


def tp_key(tp: dict, n: int) -> str:
    """A teaching problem's key in a run's records: its ``unique_id``, else ``tp<n>`` (its index)."""
    return str(tp.get("unique_id", f"tp{n}"))


def memo_equivalent(equivalent):
    """`equivalent` with a cache: voting and subsampling compare the same answers many times."""
    cache: dict = {}

    def eq(a: str, b: str) -> bool:
        key = (a, b)
        if key not in cache:
            cache[key] = a.strip() == b.strip() or equivalent(a, b)
        return cache[key]
    return eq


# The fields every M1 record has (checked on every load, by readers and on resume: a bad line is file:line,
# exit 2). "sample": the pair index in runs made before its rename to "pair".
RECORD_FIELDS = {"greedy": ("tp", "answer", "score"), "teach": ("tp", ("pair", "sample"), "answer", "score"),
                 "exam": ("tp", ("pair", "sample"), "student", "score")}


def load_run(run_dir: str | Path, answers: dict | None = None) -> tuple[M1Config, dict]:
    """The run's config and, per teaching problem, its greedy record, pairs and their exam scores.
    `answers`, when given, is filled with `answer_counts` of the records."""
    store = RunStore(run_dir, required=RECORD_FIELDS)
    cfg = M1Config.from_dict(store.read_config(), str(Path(run_dir) / "config.yaml"))
    greedy, teach, exam = store.load("greedy"), store.load("teach"), store.load("exam")
    if answers is not None:
        answers.update(answer_counts(greedy, teach, exam))
    if not teach:
        raise LbtError(f"{run_dir}: no teacher records yet (teach.jsonl is empty or missing)")
    problems: dict[str, dict] = defaultdict(lambda: {"pairs": {}, "greedy": None})
    for rec in greedy.values():
        problems[rec["tp"]]["greedy"] = rec
    for rec in teach.values():
        problems[rec["tp"]]["pairs"][pair_index(rec)] = {**rec, "exam": defaultdict(list)}
    for rec in exam.values():
        pair = problems[rec["tp"]]["pairs"].get(pair_index(rec))
        if pair is not None:
            pair["exam"][rec["student"]].append(rec["score"])
    return cfg, dict(problems)


def answer_counts(greedy: dict, teach: dict, exam: dict) -> dict:
    """Unparsed, cut-off and empty answers (`OutputCounts`) of the greedy teacher, the TR-TA pairs (which SC
    and M1 pick from) and each student's exam answers: what the models said, next to the accuracy."""
    rows = {"Greedy (teacher)": greedy.values(), "TR-TA pairs (teacher: SC, M1)": teach.values()}
    for student in sorted({r["student"] for r in exam.values()}):
        rows[f"exam: {student}"] = [r for r in exam.values() if r["student"] == student]
    return {label: OutputCounts.of(recs).as_dict() for label, recs in rows.items()}


def pair_index(rec: dict) -> int:
    """A record's pair index (``pair``; runs made before the rename call it ``sample``)."""
    return rec["pair"] if "pair" in rec else rec["sample"]


def candidates_for(problem: dict, student: str) -> list[Pair]:
    """The problem's TR-TA pairs with the LbT score of one student (or combined: mean over students),
    by `lbt_scores` — the aggregation the `M1` module uses. Not examined: None (ranks as 0)."""
    cands = []
    for i, pair in sorted(problem["pairs"].items()):
        per, combined = lbt_scores(pair["exam"])
        score = combined if student == COMBINED else per.get(student)
        cands.append(Pair(pair["answer"], score, i, rationale=pair.get("rationale", ""), per_student=per,
                          v_score=pair.get("score")))
    return cands


def summarize(run_dir: str | Path) -> dict:
    """Accuracy of Greedy, SC, M1 MAX, M1 SUM and AVG per student and combined; per-problem picks."""
    answers: dict = {}
    cfg, problems = load_run(run_dir, answers)
    task = task_for(cfg)  # math: voted methods by accuracy; code: the S-score table, never voted
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
        if task.vote:
            sc = METHODS["SC"](candidates_for(prob, views[0]) if views else [], eq)
            correct[("SC", None)].append(by_index[sc.index]["score"] if sc else 0.0)
            row["picks"]["SC"] = sc.answer if sc else None
        for view in views:
            cands = candidates_for(prob, view)
            for method in ("M1 MAX", "M1 SUM") if task.vote else ():
                pick = METHODS[method](cands, eq)
                correct[(method, view)].append(by_index[pick.index]["score"] if pick else 0.0)
                row["picks"][f"{method} [{view}]"] = pick.answer if pick else None
            row.setdefault("lbt_scores", {})[view] = [round(c.lbt_score or 0.0, 4) for c in cands]
        row["pair_correct"] = [by_index[i]["score"] for i in sorted(by_index)]
        per_problem.append(row)
        for pair in prob["pairs"].values():
            n = sum(len(v) for v in pair["exam"].values())
            expected_exam = n if expected_exam is None else max(expected_exam, n)
    table = {}
    for (method, view), vals in correct.items():
        table.setdefault(method, {})[view or "all"] = {"accuracy": mean(vals), "correct": sum(vals), "n": len(vals)}
    code = code_summary(problems, views) if task.name == "code" else None
    if code:
        for row in per_problem:
            row["code"] = code["problems"].get(row["tp"])
    return {"students": students, "views": views, "num_problems": len(problems), "table": table,
            "problems": per_problem, "curve": pairs_curve(problems, views, eq, cfg), "code": code,
            "answers": answers}


# --- code: picks judged by the hidden tests (S-score) -----------------------------------------------
V1 = " (V=1)"


def code_methods(views: list[str]) -> list[str]:
    """Row labels of the code table: the paper's baselines and M1 (MAX), per student view."""
    m1 = ["M1 MAX" + (f" [{v}]" if len(views) > 1 else "") for v in views] or ["M1 MAX"]
    return ["Greedy", "Avg.", "Avg." + V1] + [x for m in m1 for x in (m, m + V1)]


def code_problem(problem: dict, views: list[str]) -> dict:
    """S-scores of one code problem by method (None where undefined, e.g. no TA with V-score 1).

    Greedy: the greedy answer's S-score. Avg.: mean S-score of all TAs. Avg. (V=1): mean S-score of
    the TAs passing all visible tests. M1 MAX: S-score of the TA with the best LbT score (ties: higher
    V-score, then the earlier pair). M1 MAX (V=1): the same among TAs with V-score 1. Code is never
    voted (SC / M1 SUM do not apply).
    """
    pairs = sorted(problem["pairs"].items())
    s = {i: pair.get("s_score") for i, pair in pairs}
    v = {i: pair["score"] for i, pair in pairs}
    v1 = [i for i, _ in pairs if v[i] >= 1]

    def avg(idx):
        vals = [s[i] for i in idx if s[i] is not None]
        return mean(vals) if vals else None

    greedy = problem.get("greedy") or {}
    every = [i for i, _ in pairs]
    scores = {"Greedy": greedy.get("s_score"), "Avg.": avg(every), "Avg." + V1: avg(v1)}
    v_scores = {"Greedy": greedy.get("score"), "Avg.": mean(v.values()) if v else None,
                "Avg." + V1: 1.0 if v1 else None}
    picks = {}
    for view, label in zip(views or [COMBINED], code_methods(views)[3::2]):
        cands = candidates_for(problem, view)
        for name, pool in ((label, cands), (label + V1, [c for c in cands if v[c.index] >= 1])):
            # the `M1` module's code pick: answers not voted, ties to the higher V-score, then the earlier pair
            pick = m1_max(pool, None, tie_break=lambda c: c.v_score)
            best = None if pick is None else pick.index
            picks[name] = best
            scores[name] = None if best is None else s[best]
            v_scores[name] = None if best is None else v[best]
    return {"s_scores": [s[i] for i in every], "v_scores": [v[i] for i in every],
            "num_v1": len(v1), "scores": scores, "v": v_scores, "picks": picks}


def code_summary(problems: dict, views: list[str]) -> dict | None:
    """The code table (when teacher records carry ``s_score``): per problem and the mean per method
    over the problems where the method is defined; None for runs without S-scores (math)."""
    if not any("s_score" in pair for p in problems.values() for pair in p["pairs"].values()):
        return None
    methods = code_methods(views)
    per = {tp: code_problem(prob, views) for tp, prob in sorted(problems.items())}
    table = {}
    for m in methods:
        vals = [row["scores"][m] for row in per.values() if row["scores"].get(m) is not None]
        v_vals = [row["v"][m] for row in per.values() if row["v"].get(m) is not None]
        table[m] = {"mean": mean(vals) if vals else None, "n": len(vals), "of": len(per),
                    "v_mean": mean(v_vals) if v_vals else None}
    return {"methods": methods, "table": table, "problems": per}


def pairs_curve(problems: dict, views: list[str], eq, cfg: M1Config) -> dict:
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
