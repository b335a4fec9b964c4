"""From a run directory's records to LbT scores, M1 picks and accuracies (no LM calls).

`load_run` reads the records into `PairExam`s; `summarize` gives the accuracy table (`MethodAccuracy` rows,
summary.json's ``table``), each problem's picks and the accuracy against the number of pairs
(`accuracy_vs_pairs`, the one computation behind summary.json's ``curve`` and the report's Fig. 4).
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace
from pathlib import Path
from statistics import mean

import numpy as np

from .. import stats
from ..config import M1Config
from ..errors import LbtError
from ..scoring import exam_scorers
from ..lbt_score import lbt_scores
from ..model_output import OutputCounts
from ..results import ALL, CodeScore, Fig4Point, MethodAccuracy, PairExam
from ..tasks import task_for
from .select import METHODS, Pair, m1_max
from ..store import RunStore

COMBINED = "combined"
VOTED = ("SC", "M1 MAX", "M1 SUM")


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
    """The run's config and, per teaching problem, ``{"greedy": its greedy record or None, "pairs": {index:
    PairExam}}`` (each pair with its students' exam scores). `answers`, when given, is filled with
    `answer_counts` of the records."""
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
    exams: dict[tuple, dict] = {}
    for rec in teach.values():
        problems[rec["tp"]]["pairs"][pair_index(rec)] = rec
        exams[(rec["tp"], pair_index(rec))] = defaultdict(list)
    for rec in exam.values():
        scores = exams.get((rec["tp"], pair_index(rec)))
        if scores is not None:
            scores[rec["student"]].append(rec["score"])
    for tp, prob in problems.items():
        prob["pairs"] = {i: PairExam.from_record(rec, exams[(tp, i)]) for i, rec in prob["pairs"].items()}
    return cfg, dict(problems)


def students_and_views(problems: dict) -> tuple[list[str], list[str]]:
    """The students of the run's exams, and the views of its tables: each student, and ``combined`` (the
    mean over students) when there are several."""
    students = sorted({s for p in problems.values() for pair in p["pairs"].values() for s in pair.exam})
    return students, students + ([COMBINED] if len(students) > 1 else [])


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
        per, combined = lbt_scores(pair.exam)
        score = combined if student == COMBINED else per.get(student)
        cands.append(Pair(pair.answer, score, i, rationale=pair.rationale, per_student=per, v_score=pair.score))
    return cands


def pick_answer(row: dict, method: str, view: str | None = None):
    """The answer `method` picked in student `view` (None: methods that use no LbT score) for one problem row
    of `summarize` (summary.json's ``problems``): ``row["picks"][method][view or "all"]``. Also reads rows
    written before picks were keyed by method and view apart (``"M1 SUM [view]"``, ``"SC"``)."""
    picks = row["picks"]
    got = picks.get(method)
    if isinstance(got, dict):  # {view or "all": answer}
        return got.get(view or ALL, got.get(ALL))
    old = f"{method} [{view}]"  # rows written before: {"SC": answer, "M1 SUM [view]": answer}
    return picks[old] if view and old in picks else got


def summarize(run_dir: str | Path) -> dict:
    """Accuracy of Greedy, SC, M1 MAX, M1 SUM and AVG per student and combined (``table``:
    {method: {view, or "all" for methods without LbT score: {accuracy, correct, n}}}), per-problem picks
    (``picks``: {method: {view or "all": answer}}, read with `pick_answer`) and the accuracy against the
    number of pairs (``curve``: the estimates of the report's Fig. 4)."""
    answers: dict = {}
    cfg, problems = load_run(run_dir, answers)
    task = task_for(cfg)  # math: voted methods by accuracy; code: the S-score table, never voted
    scorer = exam_scorers.build(vars(cfg))
    eq = memo_equivalent(scorer.equivalent)
    students, views = students_and_views(problems)
    per_problem, correct = [], defaultdict(list)
    for tp, prob in sorted(problems.items()):
        row = {"tp": tp, "greedy": prob["greedy"]["answer"] if prob["greedy"] else None, "picks": {}}
        if prob["greedy"]:
            correct[("Greedy", None)].append(prob["greedy"]["score"])
        pairs = prob["pairs"]
        correct[("AVG", None)].append(mean(pair.score for pair in pairs.values()))
        if task.vote:
            sc = METHODS["SC"](candidates_for(prob, views[0]) if views else [], eq)
            correct[("SC", None)].append(pairs[sc.index].score if sc else 0.0)
            row["picks"]["SC"] = {ALL: sc.answer if sc else None}
        for view in views:
            cands = candidates_for(prob, view)
            for method in ("M1 MAX", "M1 SUM") if task.vote else ():
                pick = METHODS[method](cands, eq)
                correct[(method, view)].append(pairs[pick.index].score if pick else 0.0)
                row["picks"].setdefault(method, {})[view] = pick.answer if pick else None
            row.setdefault("lbt_scores", {})[view] = [round(c.lbt_score or 0.0, 4) for c in cands]
        row["pair_correct"] = [pairs[i].score for i in sorted(pairs)]
        per_problem.append(row)
    accuracies = [MethodAccuracy(method, view, mean(vals), sum(vals), len(vals))
                  for (method, view), vals in correct.items()]
    code = code_summary(problems, views) if task.name == "code" else None
    if code:
        for row in per_problem:
            row["code"] = code["problems"].get(row["tp"])
    view = views[-1] if views else COMBINED  # the view comparisons are made in (`protocols.main_view`)
    curve = accuracy_vs_pairs(problems, view, eq, fig4_sizes(num_pairs(problems), cfg.subsample_sizes),
                              cfg.subsample_repeats, cfg.seed)
    return {"students": students, "views": views, "num_problems": len(problems),
            "table": MethodAccuracy.table(accuracies), "problems": per_problem,
            "curve": {"sizes": [p.pairs for p in curve], "view": view,
                      **{m: [p.accuracy[m].estimate for p in curve] for m in VOTED}},
            "code": code, "answers": answers}


# --- code: picks judged by the hidden tests (S-score) -----------------------------------------------
def code_rows(views: list[str]) -> list[CodeScore]:
    """The rows of the code table, in order: the paper's baselines (Greedy, Avg., Avg. (V=1)), then M1 MAX and
    M1 MAX (V=1) in each student view (``combined`` when the run has no exam records yet)."""
    m1 = [CodeScore("M1 MAX", view, visible) for view in (views or [COMBINED]) for visible in (False, True)]
    return [CodeScore("Greedy"), CodeScore("Avg."), CodeScore("Avg.", visible=True)] + m1


def code_problem(problem: dict, views: list[str]) -> dict:
    """S-scores of one code problem: every TA's (``s_scores``, ``v_scores``, ``num_v1``) and each method's
    (``rows``: `CodeScore`s of `code_rows`, S-score None where undefined, e.g. no TA with V-score 1).

    Greedy: the greedy answer's S-score. Avg.: mean S-score of all TAs. Avg. (V=1): mean S-score of
    the TAs passing all visible tests. M1 MAX: S-score of the TA with the best LbT score (ties: higher
    V-score, then the earlier pair). M1 MAX (V=1): the same among TAs with V-score 1. Code is never
    voted (SC / M1 SUM do not apply).
    """
    pairs = sorted(problem["pairs"].items())
    s = {i: pair.s_score for i, pair in pairs}
    v = {i: pair.score for i, pair in pairs}
    every = [i for i, _ in pairs]
    v1 = [i for i in every if v[i] >= 1]

    def avg(idx):
        vals = [s[i] for i in idx if s[i] is not None]
        return mean(vals) if vals else None

    greedy = problem.get("greedy") or {}
    rows = []
    for row in code_rows(views):
        if row.method == "Greedy":
            s_score, v_score, pick = greedy.get("s_score"), greedy.get("score"), None
        elif row.method == "Avg.":
            idx = v1 if row.visible else every
            s_score, pick = avg(idx), None
            v_score = (1.0 if v1 else None) if row.visible else (mean(v.values()) if v else None)
        else:  # the `M1` module's code pick: answers not voted, ties to the higher V-score, then the earlier pair
            cands = [c for c in candidates_for(problem, row.view) if not row.visible or v[c.index] >= 1]
            best = m1_max(cands, None, tie_break=lambda c: c.v_score)
            pick = None if best is None else best.index
            s_score, v_score = (None, None) if pick is None else (s[pick], v[pick])
        rows.append(replace(row, s_score=s_score, v_score=v_score, pair=pick, n=int(s_score is not None), of=1))
    return {"s_scores": [s[i] for i in every], "v_scores": [v[i] for i in every], "num_v1": len(v1),
            "rows": [r.to_dict() for r in rows]}


def code_summary(problems: dict, views: list[str]) -> dict | None:
    """The code table (when teacher records carry ``s_score``): ``rows``, each method's mean over the
    problems where it is defined (`CodeScore`), and per problem `code_problem`; None for runs without
    S-scores (math)."""
    if not any(pair.s_score is not None for p in problems.values() for pair in p["pairs"].values()):
        return None
    per = {tp: code_problem(prob, views) for tp, prob in sorted(problems.items())}
    by_problem = [[CodeScore.from_dict(r) for r in row["rows"]] for row in per.values()]
    table = []
    for j, row in enumerate(code_rows(views)):  # every problem's rows are `code_rows`, in this order
        s_vals = [rows[j].s_score for rows in by_problem if rows[j].s_score is not None]
        v_vals = [rows[j].v_score for rows in by_problem if rows[j].v_score is not None]
        table.append(replace(row, s_score=mean(s_vals) if s_vals else None, v_score=mean(v_vals) if v_vals else None,
                             n=len(s_vals), of=len(per)))
    return {"views": views, "rows": [r.to_dict() for r in table], "problems": per}


def code_table_rows(code: dict, problem: str | None = None) -> list[CodeScore]:
    """The `CodeScore` rows of `code_summary`'s result: the table's, or one problem's."""
    rows = code["rows"] if problem is None else code["problems"][problem]["rows"]
    return [CodeScore.from_dict(r) for r in rows]


# --- accuracy against the number of pairs (summary.json's curve, the report's Fig. 4, Table A6) ---------
def num_pairs(problems: dict) -> int:
    """The largest number of TR-TA pairs of a problem in the run."""
    return max((len(p["pairs"]) for p in problems.values()), default=0)


def fig4_sizes(n_max: int, sizes: list | None = None) -> list[int]:
    """Numbers of pairs of the curve (Fig. 4): the given ones, else 16, 32, ... up to all (the paper's
    16 ... 256), or 1, 2, 4, ... all for runs with fewer than 32 pairs."""
    if sizes:
        return sorted({int(s) for s in sizes if 1 <= int(s) <= n_max})
    start = 16 if n_max >= 32 else 1
    out, s = [], start
    while s < n_max:
        out.append(s)
        s *= 2
    return out + [n_max] if n_max else []


def subsample(problems: dict, view: str, eq, size: int, repeats: int, rng: random.Random) -> dict[str, np.ndarray]:
    """SC / M1 MAX / M1 SUM scores with `size` random pairs per problem: {method: array (repeats, problems)}.

    Each repeat draws, for every problem independently, `size` of its pairs without replacement (all of
    them when it has fewer). Problems are taken in sorted order, so a seeded `rng` reproduces the table.
    """
    tps = sorted(tp for tp, p in problems.items() if p["pairs"])
    out = {m: np.zeros((repeats, len(tps))) for m in VOTED}
    for r in range(repeats):
        for j, tp in enumerate(tps):
            prob = problems[tp]
            cands = candidates_for(prob, view)
            # kept in pair order: ties break as in the full table, so all pairs reproduce it exactly
            sub = sorted(rng.sample(cands, min(size, len(cands))), key=lambda c: c.index)
            for m in VOTED:
                pick = METHODS[m](sub, eq)
                out[m][r, j] = prob["pairs"][pick.index].score if pick else 0.0
    return out


def accuracy_vs_pairs(problems: dict, view: str, eq, sizes: list[int], repeats: int = 20, seed: int = 0,
                      resamples: int = stats.RESAMPLES) -> list[Fig4Point]:
    """Accuracy against the number of TR-TA pairs (Fig. 4, left): per number of pairs, the accuracy of SC /
    M1 MAX / M1 SUM (each problem's score averaged over `repeats` random subsets of that many pairs; all
    pairs: one) with 95% bootstrap intervals over problems, and M1 against SC at the same number of pairs:
    the relative improvement M1 / SC − 1 and the difference M1 − SC, with paired intervals.

    The one computation of it: summary.json's ``curve`` (its estimates) and the report's Fig. 4 use it.
    """
    rng = random.Random(seed)
    n_max = num_pairs(problems)
    points = []
    for size in sizes:
        sub = subsample(problems, view, eq, size, repeats if size < n_max else 1, rng)
        per = {m: sub[m].mean(axis=0) for m in VOTED}
        points.append(Fig4Point(
            n=int(per["SC"].size), pairs=size,
            accuracy={m: stats.bootstrap_mean(per[m], resamples=resamples, seed=seed) for m in VOTED},
            relative={m: stats.relative_improvement(per[m], per["SC"], resamples=resamples, seed=seed)
                      for m in ("M1 MAX", "M1 SUM")},
            difference={m: stats.paired_difference(per[m], per["SC"], resamples=resamples, seed=seed)
                        for m in ("M1 MAX", "M1 SUM")}))
    return points
