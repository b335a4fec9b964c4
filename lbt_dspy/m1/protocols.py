"""The paper's M1 protocols on a run directory, with intervals (no LM calls).

- `method_scores`: every method's per-problem score (the numbers behind the accuracy table), so each
  accuracy gets a bootstrap interval over problems and each comparison a paired one (`lbt_dspy.stats`).
- `table_a6`: Table A6 (`results.TableA6`) — M1 with only k TR-TA pairs (the paper: 24) against SC with all
  of them, mean ± std over B random subsets of k pairs per problem (the paper: 10).
- `accuracy_vs_pairs` (from `m1.results`, which summary.json's curve uses too), `fig4_by_level`: Fig. 4
  (`results.Fig4Point`) — relative improvement of M1 over SC as a function of the number of pairs and of
  the difficulty level (math181 has levels 1-5), with 95% bootstrap bands.
- `published_rows`: the paper's Table 2 / Table A6 rows for the run's teacher and student names.

Picks are made by the same selectors as the run's table (`select.METHODS`, `results.candidates_for`).

Example:
    >>> from lbt_dspy.m1.protocols import paper_name
    >>> paper_name("meta-llama/Meta-Llama-3-8B-Instruct"), paper_name("gpt-4o-mini"), paper_name("qwen2")
    ('LLaMA3-8B', 'GPT-4o mini', None)
"""

from __future__ import annotations

import random
import re
from pathlib import Path
from statistics import mean

import numpy as np

from .. import stats
from ..results import Fig4Point, PairedComparison, SubsetAccuracy, TableA6
from .results import (COMBINED, VOTED, accuracy_vs_pairs, candidates_for, fig4_sizes, load_run, memo_equivalent,
                      num_pairs, students_and_views, subsample, tp_key)
from .select import METHODS

A6_PAIRS = 24
A6_SUBSETS = 10


def _pick_score(method: str, cands, pairs: dict, eq) -> float:
    pick = METHODS[method](cands, eq)
    return pairs[pick.index].score if pick else 0.0


def main_view(views: list[str]) -> str | None:
    """The student view comparisons are made in: the combined score with several students, else the one."""
    return views[-1] if views else None


def method_scores(problems: dict, views: list[str], eq) -> dict[str, dict[str, dict[str, float]]]:
    """{view: {method: {tp: score}}} for Greedy, SC, M1 MAX, M1 SUM and AVG, all pairs (as the run's table).

    Greedy, SC and AVG do not use the LbT score, so they are the same in every view. Greedy is absent for
    problems without a greedy record.
    """
    out = {}
    for view in views or [COMBINED]:
        per = {m: {} for m in ("Greedy", "SC", "M1 MAX", "M1 SUM", "AVG")}
        for tp, prob in sorted(problems.items()):
            pairs = prob["pairs"]
            if not pairs:
                continue
            if prob.get("greedy"):
                per["Greedy"][tp] = prob["greedy"]["score"]
            per["AVG"][tp] = mean(p.score for p in pairs.values())
            cands = candidates_for(prob, view)
            for m in VOTED:
                per[m][tp] = _pick_score(m, cands, pairs, eq)
        out[view] = per
    return out


def table_a6(problems: dict, view: str, eq, k: int = A6_PAIRS, subsets: int = A6_SUBSETS, seed: int = 0,
             resamples: int = stats.RESAMPLES) -> TableA6:
    """Table A6: M1 MAX / M1 SUM (and SC) with `k` pairs per problem vs SC with all pairs.

    Returns accuracies as mean and std (sample std, ddof=1) over `subsets` random subsets, the paper's
    "Improv." (`TableA6.improvement`: mean M1 SUM(k) - SC(all)), and beyond the paper the paired bootstrap
    interval over problems of M1(k) - SC(all), with each problem's M1(k) score averaged over the subsets.
    """
    tps = sorted(tp for tp, p in problems.items() if p["pairs"])
    full = method_scores({tp: problems[tp] for tp in tps}, [view], eq)[view]
    sc_all = np.array([full["SC"][tp] for tp in tps])
    sub = subsample(problems, view, eq, k, subsets, random.Random(seed))
    at_k = {}
    for m in VOTED:
        accs = sub[m].mean(axis=1)
        at_k[m] = SubsetAccuracy(float(accs.mean()), float(accs.std(ddof=1)) if subsets > 1 else 0.0)
    comps = tuple(PairedComparison.of(m, "SC", stats.paired_difference(sub[m].mean(axis=0), sc_all,
                                                                       resamples=resamples, seed=seed))
                  for m in ("M1 MAX", "M1 SUM"))
    return TableA6(k, subsets, len(tps), num_pairs(problems), view,
                   float(np.mean(list(full["Greedy"].values()))) if full["Greedy"] else None,
                   float(sc_all.mean()) if tps else None, at_k, comps)


def problem_levels(cfg) -> dict[str, int] | None:
    """{tp: difficulty level} from the run's dataset (math181 rows carry ``level``); None without levels."""
    from ..data import datasets

    try:
        data = datasets.build(vars(cfg))
    except Exception:  # a report must not fail because the dataset moved; it just has no levels then
        return None
    levels = {}
    for n, tp in enumerate(data.teaching):
        lv = tp.get("level")
        if isinstance(lv, str):
            m = re.search(r"\d+", lv)
            lv = int(m.group()) if m else None
        if isinstance(lv, int):
            levels[tp_key(tp, n)] = lv
    return levels or None


def fig4_by_level(scores: dict[str, dict[str, float]], levels: dict[str, int], seed: int = 0,
                  resamples: int = stats.RESAMPLES) -> list[Fig4Point]:
    """Fig. 4 (right): per difficulty level, SC and M1 accuracy (all pairs) and the relative improvement
    of M1 over SC with its paired 95% interval. `scores` is one view of `method_scores`."""
    rows = []
    for lv in sorted(set(levels.values())):
        tps = [tp for tp in sorted(scores["SC"]) if levels.get(tp) == lv]
        if not tps:
            continue
        per = {m: [scores[m][tp] for tp in tps] for m in VOTED}
        rows.append(Fig4Point(
            n=len(tps), level=lv,
            accuracy={m: stats.bootstrap_mean(per[m], resamples=resamples, seed=seed) for m in VOTED},
            relative={m: stats.relative_improvement(per[m], per["SC"], resamples=resamples, seed=seed)
                      for m in ("M1 MAX", "M1 SUM")}))
    return rows


# --- the paper's published numbers ------------------------------------------------------------------
SOURCE = ("Ning et al., \"Can LLMs Learn by Teaching for Better Reasoning?\", NeurIPS 2024 (arXiv v3): "
          "181 MATH test problems (MATH500 ∩ MATH()), 256 TR-TA pairs, 3 variants x 3 repeats = 9 exam answers per "
          "pair, temperature 0.7, top-k 20")

# Table 2: Greedy, SC, M1 (MAX), M1 (SUM), Improv. (= M1 SUM - SC), accuracy in %, 256 pairs.
PAPER_TABLE2 = {
    ("GPT-4o", ("GPT-4o mini",)): (87.84, 91.71, 95.03, 96.69, 4.98),
    ("GPT-4o", ("LLaMA3-8B",)): (87.84, 91.71, 94.48, 95.03, 3.32),
    ("GPT-4o", ("GPT-4o mini", "LLaMA3-8B")): (87.84, 91.71, 96.13, 95.58, 3.87),
    ("GPT-3.5", ("LLaMA3-8B",)): (59.11, 77.90, 83.43, 83.43, 5.53),
    ("GPT-3.5", ("Mistral-7B",)): (59.11, 77.90, 81.22, 83.43, 5.53),
    ("GPT-3.5", ("LLaMA3-8B", "Mistral-7B")): (59.11, 77.90, 84.53, 84.53, 6.63),
    ("LLaMA3-70B", ("LLaMA3-8B",)): (70.16, 81.77, 86.74, 87.85, 6.08),
    ("LLaMA3-70B", ("Mistral-7B",)): (70.16, 81.77, 86.19, 85.08, 3.31),
    ("LLaMA3-70B", ("LLaMA3-8B", "Mistral-7B")): (70.16, 81.77, 87.85, 87.29, 5.52),
    ("LLaMA3-8B", ("LLaMA3-8B",)): (45.85, 64.64, 77.90, 82.87, 18.23),
    ("Mistral-7B", ("LLaMA3-8B",)): (19.88, 40.88, 51.93, 53.59, 12.71),
}
TABLE2_COLUMNS = ("Greedy", "SC", "M1 MAX", "M1 SUM", "Improv.")

# Table A6: Greedy, SC (256 pairs), M1 MAX (24) mean, std, M1 SUM (24) mean, std, Improv. (the paper's
# column; its own definition is not restated in the table). The paper's first combined row is named
# "mini & LLaMA3-8B": GPT-4o mini & LLaMA3-8B.
PAPER_TABLE_A6 = {
    ("GPT-4o", ("GPT-4o mini",)): (87.84, 91.71, 94.20, 0.79, 94.36, 0.88, 2.65),
    ("GPT-4o", ("LLaMA3-8B",)): (87.84, 91.71, 93.92, 0.92, 94.14, 0.83, 2.43),
    ("GPT-4o", ("GPT-4o mini", "LLaMA3-8B")): (87.84, 91.71, 93.98, 0.58, 94.31, 0.43, 2.60),
    ("GPT-3.5", ("LLaMA3-8B",)): (59.11, 77.90, 78.34, 1.86, 79.50, 2.13, 1.60),
    ("GPT-3.5", ("Mistral-7B",)): (59.11, 77.90, 77.85, 1.34, 78.07, 1.19, 0.17),
    ("GPT-3.5", ("LLaMA3-8B", "Mistral-7B")): (59.11, 77.90, 80.94, 1.51, 80.61, 1.72, 2.71),
    ("LLaMA3-70B", ("LLaMA3-8B",)): (70.16, 81.77, 84.97, 1.73, 85.69, 1.49, 3.92),
    ("LLaMA3-70B", ("Mistral-7B",)): (70.16, 81.77, 82.65, 1.82, 84.03, 1.47, 2.26),
    ("LLaMA3-70B", ("LLaMA3-8B", "Mistral-7B")): (70.16, 81.77, 84.53, 1.26, 84.48, 1.36, 2.71),
    ("LLaMA3-8B", ("LLaMA3-8B",)): (45.85, 64.64, 70.83, 1.91, 72.93, 2.15, 8.29),
    ("Mistral-7B", ("LLaMA3-8B",)): (19.88, 40.88, 40.55, 1.82, 42.43, 1.78, 1.55),
}

# Model ids -> the paper's names. LLaMA3 means Llama 3 (not 3.1/3.2): a different model has no row.
_NAMES = [
    (r"gpt-?4o-?mini", "GPT-4o mini"),
    (r"gpt-?4o(?!-?mini)", "GPT-4o"),
    (r"gpt-?3\.?5", "GPT-3.5"),
    (r"llama-?3(?![.\d])[-_]?70b", "LLaMA3-70B"),
    (r"llama-?3(?![.\d])[-_]?8b", "LLaMA3-8B"),
    (r"mistral-?7b", "Mistral-7B"),
]


def paper_name(model: str | None) -> str | None:
    """The paper's name of a model id (e.g. meta-llama/Meta-Llama-3-8B-Instruct -> LLaMA3-8B), else None."""
    if not model:
        return None
    low = str(model).lower().rsplit("/", 1)[-1]
    for pattern, name in _NAMES:
        if re.search(pattern, low):
            return name
    return None


def _entry_model(entry) -> str | None:
    if not isinstance(entry, dict):
        return None
    cfg = entry.get("model_cfg") or {}
    return cfg.get("model") or cfg.get("name") or cfg.get("checkpoint")


def published_rows(cfg) -> dict:
    """The paper's rows for this run's teacher and students (math181 runs only).

    Returns {"applies": bool, "teacher": name, "students": names, "table2": row or None, "a6": row or None,
    "why": text}; rows are dicts of column -> value.
    """
    teacher = paper_name(_entry_model(cfg.teacher_model_cfg))
    students = [paper_name(_entry_model(e)) for e in cfg.student_model_cfgs]
    out = {"applies": cfg.dataset_type == "math181", "teacher": teacher, "students": students,
           "table2": None, "a6": None}
    if not out["applies"]:
        out["why"] = f"dataset {cfg.dataset_type!r} is not the paper's math181"
        return out
    if teacher is None or None in students:
        out["why"] = "the teacher or a student is not one of the paper's models"
        return out
    names = {"GPT-4o mini": 0, "LLaMA3-8B": 1, "Mistral-7B": 2}  # the paper's order in combined rows
    key = (teacher, tuple(sorted(set(students), key=lambda s: names.get(s, 9))))
    if key in PAPER_TABLE2:
        out["table2"] = dict(zip(TABLE2_COLUMNS, PAPER_TABLE2[key]))
    if key in PAPER_TABLE_A6:
        g, sc, mx, mxs, sm, sms, imp = PAPER_TABLE_A6[key]
        out["a6"] = {"Greedy": g, "SC(256)": sc, "M1 MAX(24)": (mx, mxs), "M1 SUM(24)": (sm, sms), "Improv.": imp}
    if out["table2"] is None and out["a6"] is None:
        out["why"] = f"the paper has no row for teacher {teacher}, students {' & '.join(key[1])}"
    return out


def protocols(run_dir: str | Path, *, a6_pairs: int | None = None, a6_subsets: int | None = None,
              resamples: int | None = None) -> dict:
    """Everything the report's evidence sections show, from the run directory (reads only), JSON-ready:
    ``a6`` is a `TableA6`, ``fig4`` and ``levels`` are `Fig4Point`s, each as its ``to_dict()``."""
    cfg, problems = load_run(run_dir)
    from ..scoring import exam_scorers

    eq = memo_equivalent(exam_scorers.build(vars(cfg)).equivalent)
    students, views = students_and_views(problems)
    view = main_view(views) or COMBINED
    seed = cfg.seed
    resamples = resamples or getattr(cfg, "bootstrap_resamples", stats.RESAMPLES)
    k = a6_pairs or getattr(cfg, "a6_pairs", A6_PAIRS)
    subsets = a6_subsets or getattr(cfg, "a6_subsets", A6_SUBSETS)
    scores = method_scores(problems, views, eq)
    n_max = num_pairs(problems)
    out = {"view": view, "views": views, "seed": seed, "resamples": resamples, "pairs": n_max,
           "scores": scores, "a6": None, "a6_k": k, "a6_subsets": subsets,
           "fig4": [p.to_dict() for p in accuracy_vs_pairs(problems, view, eq, fig4_sizes(n_max, cfg.subsample_sizes),
                                                            cfg.subsample_repeats, seed, resamples)],
           "levels": None, "published": published_rows(cfg)}
    if n_max > k:
        out["a6"] = table_a6(problems, view, eq, k, subsets, seed, resamples).to_dict()
    levels = problem_levels(cfg)
    if levels:
        out["levels"] = [p.to_dict() for p in fig4_by_level(scores[view], levels, seed, resamples)]
    return out
