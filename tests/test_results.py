"""Typed results (`lbt_dspy.results`) and the one comparison table (`lbt_dspy.tables`): old run directories
still give the same tables, old summary.json files are read into the types, and every report's comparison
table keeps its columns.

The fixtures (tests/fixtures/m1_old_run, tests/fixtures/m2_eval_old; see their README.md) were written by the
code before the typed results: their records (``sample``, not ``pair``), summary.json layouts and the text
`lbt select` / `lbt report` gave then are what these tests hold the code to.
"""

import json
import shutil
import sys
from pathlib import Path

import pytest

from lbt_dspy import run_kinds
from lbt_dspy.m1.report import a6_table, comparison_table as m1_comparison_table, fig4_table, method_table
from lbt_dspy.m1.results import load_run, pick_answer, summarize
from lbt_dspy.results import (Fig4Point, M3Round, MethodAccuracy, PairedComparison, PairExam, SubsetAccuracy,
                              TableA6)
from lbt_dspy.stats import Interval, paired_difference, paired_metric_difference
from lbt_dspy.tables import Column, comparison_table, markdown_table

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _printed(text: str) -> str:  # what the CLI prints of a table (a newline is added when it has none)
    return text if text.endswith("\n") else text + "\n"


def _files(path: Path) -> dict:
    return {p.relative_to(path): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def _section(text: str, heading: str) -> str:
    """The first markdown table after `heading` in a report."""
    rest = text.split(heading, 1)[1]
    lines = [x for x in rest.splitlines() if x.startswith("|")]
    start = rest.splitlines().index(lines[0])
    block = []
    for x in rest.splitlines()[start:]:
        if not x.startswith("|"):
            break
        block.append(x)
    return "\n".join(block) + "\n"


# --- an M1 run directory of the old format -------------------------------------------------------------
@pytest.fixture
def old_m1(tmp_path):
    run = tmp_path / "run"
    shutil.copytree(FIXTURES / "m1_old_run", run)
    return run


def test_old_m1_run_select_and_report_give_the_same_tables(old_m1):
    before = _files(old_m1)
    text, summary = run_kinds.select(old_m1)
    assert _printed(text) == (FIXTURES / "m1_old_run" / "lbt_select.txt").read_text()
    assert _files(old_m1) == before  # a reader writes nothing
    old_report = (old_m1 / "report.md").read_text()
    printed, path = run_kinds.report(old_m1)
    assert _printed(printed) == (FIXTURES / "m1_old_run" / "lbt_select.txt").read_text()
    assert path.read_text() == old_report  # byte for byte: accuracy, comparisons, Table A6, Fig. 4


def test_old_m1_records_load_as_pairs_with_their_exam(old_m1):
    _, problems = load_run(old_m1)
    pair = problems["p00"]["pairs"][3]
    assert isinstance(pair, PairExam) and (pair.tp, pair.index) == ("p00", 3)  # "sample": 3 in the record
    assert set(pair.exam) == {"stu-a", "stu-b"} and all(len(v) == 2 for v in pair.exam.values())
    assert pair.num_exam == 4
    assert PairExam.from_record({"tp": "x", "pair": 2, "answer": "4", "score": 1.0}).index == 2


def test_old_summary_json_is_read_into_the_typed_results(old_m1):
    """summary.json as the code before the typed results wrote it ("M1 SUM [view]" picks, "SC(all)", "M1 SUM(k)",
    "diff M1 SUM", "rel M1 SUM" keys) renders the same tables as the new layout and the report."""
    old = json.loads((FIXTURES / "m1_old_run" / "summary.json").read_text())
    report = (FIXTURES / "m1_old_run" / "report.md").read_text()
    assert "diff M1 SUM" in old["evidence"]["a6"] and "rel M1 SUM" in old["evidence"]["fig4"][0]  # the old layout
    new = summarize(old_m1)
    new["evidence"] = run_kinds.select(old_m1)[1]["evidence"]
    for s in (old, new):
        ev = s["evidence"]
        assert a6_table(ev) == _section(report, "## Table A6 protocol")
        assert fig4_table(ev) == _section(report, "## Accuracy vs number of TR-TA pairs")
        assert m1_comparison_table(ev, 8) == _section(report, "## Paired comparisons")
        assert method_table(s, ["Greedy", "SC", "M1 MAX", "M1 SUM", "AVG"]) == _section(report, "## Accuracy (8")
    old_a6, new_a6 = (TableA6.from_dict(s["evidence"]["a6"]) for s in (old, new))
    assert old_a6 == new_a6 and old_a6.at_k["M1 SUM"] == SubsetAccuracy(0.85, pytest.approx(0.0559, abs=1e-4))
    assert old_a6.improvement("M1 SUM") == pytest.approx(old["evidence"]["a6"]["Improv. M1 SUM"])
    assert [Fig4Point.from_dict(p) for p in old["evidence"]["fig4"]] == [Fig4Point.from_dict(p) for p in
                                                                         new["evidence"]["fig4"]]
    # picks: method and view apart now ({"M1 SUM": {"stu-a": ...}}); pick_answer reads both layouts alike
    assert "M1 SUM [stu-a]" in old["problems"][0]["picks"] and "stu-a" in new["problems"][0]["picks"]["M1 SUM"]
    for o, n in zip(old["problems"], new["problems"]):
        for method, view in [("SC", None)] + [(m, v) for m in ("M1 MAX", "M1 SUM") for v in new["views"]]:
            assert pick_answer(o, method, view) == pick_answer(n, method, view) == n["picks"][method][view or "all"]


# --- an `lbt m2 eval` directory of the old format -----------------------------------------------------------
def test_old_m2_eval_dir_select_and_report_give_the_same_tables(tmp_path):
    out = tmp_path / "eval"
    shutil.copytree(FIXTURES / "m2_eval_old", out)
    text, summary = run_kinds.select(out)
    assert _printed(text) == (FIXTURES / "m2_eval_old" / "lbt_select.txt").read_text()
    saved = json.loads((out / "eval_summary.json").read_text())
    assert summary["comparisons"] == saved["comparisons"] and summary["rows"] == saved["rows"]
    old_report = (out / "report.md").read_text()
    _, path = run_kinds.report(out)
    assert path.read_text() == old_report


# --- the one comparison table: each report's columns ----------------------------------------------------
YS = ["Yes", "No", "Yes", "Yes", "No", "No", "Yes", "No"]
PA = ["Yes", "No", "Yes", "No", "No", "Yes", "Yes", "No"]
PB = ["No", "No", "Yes", "No", "Yes", "Yes", "No", "No"]


def _acc(y, p):
    return sum(a == b for a, b in zip(y, p)) / len(y)


def _f1(y, p):
    tp = sum(a == b == "Yes" for a, b in zip(y, p))
    fp = sum(b == "Yes" != a for a, b in zip(y, p))
    fn = sum(a == "Yes" != b for a, b in zip(y, p))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_bench_m3_table_two_differences_per_row_grouped_by_task():
    sys.path.insert(0, str(ROOT / "eval"))
    import bench_m3

    comps = []
    for b, others in (("zero-shot", (PB, PB)), ("majority", (PA, ["No"] * 8))):
        for (metric, fn), other in zip((("accuracy", _acc), ("F1", _f1)), others):
            comps.append(PairedComparison.of("LbT", b, paired_metric_difference(fn, YS, PA, other, resamples=300),
                                             metric=metric, group="liar"))
    # the table eval/bench_m3.py wrote before the one comparison table (same comparisons)
    assert bench_m3.comparison_table(comps) == (
        "| task | comparison | accuracy difference (points) [95% paired CI] | F1 difference (points) [95% paired CI] | "
        "wins / losses / ties (items) | reading |\n"
        "|---|---|---|---|---|---|\n"
        "| liar | LbT − zero-shot | +37.5 pts [+12.5, +69.1] | +46.4 pts [+0.0, +90.9] | 3 / 0 / 5 | "
        "resolved (accuracy): the interval excludes 0 |\n"
        "| liar | LbT − majority | +0.0 pts [+0.0, +0.0] | +75.0 pts [+28.6, +100.0] | 0 / 0 / 8 | "
        "resolved (F1): the interval excludes 0 |\n")


def test_m3_and_code_tables_keep_their_columns():
    from lbt_dspy.m3.report import evidence_table

    d = paired_metric_difference(_f1, YS, PA, PB, resamples=300)
    s = {"evidence": {"n": 8, "comparisons": [PairedComparison.of("LbT round 2", "zero_shot", d).to_dict()]}}
    assert evidence_table(s) == (
        "| comparison (8 test items) | F1 difference (points) [95% paired CI] | wins / losses / ties | reading |\n"
        "|---|---|---|---|\n"
        "| LbT round 2 − zero_shot | +46.4 pts [+0.0, +90.9] | 3 / 0 / 5 | not resolved: the interval contains 0 |\n")
    d2 = paired_difference([0.5, 1.0, 0.25, 1.0], [0.5, 0.0, 0.0, 1.0], resamples=300)
    ev = {"comparisons": [PairedComparison.of("M1 MAX", "Avg.", d2, scale=1, digits=3, unit="").to_dict()]}
    assert m1_comparison_table(ev, 4, unit="S-score") == (
        "| comparison (4 problems) | difference (S-score) [95% paired CI] | wins / losses / ties | paired problems | "
        "reading |\n|---|---|---|---|---|\n"
        "| M1 MAX − Avg. | +0.312 [+0.000, +0.783] | 2 / 0 / 2 | 4 | not resolved: the interval contains 0 |\n")


def test_comparison_table_columns_are_parameters():
    d = paired_difference([1, 1, 1, 0], [0, 0, 1, 0], resamples=200)
    c = PairedComparison.of("a", "b", d)
    three = comparison_table([c, c, c], "cmp", differences=[("x", "X"), ("y", "Y"), ("z", "Z")], paired=False)
    head, _, row = three.splitlines()
    assert head == "| cmp | X [95% paired CI] | Y [95% paired CI] | Z [95% paired CI] | wins / losses / ties | reading |"
    assert row.endswith("| 2 / 0 / 2 | not resolved: every interval contains 0 |")
    missing = comparison_table([c], "cmp", differences=[("x", "X"), ("y", "Y")])  # a row without its F1: "-"
    assert "| +50.0 pts [+0.0, +100.0] | - | 2 / 0 / 2 | 4 |" in missing
    assert markdown_table([], [Column("h", str)]) == "| h |\n|---|\n"


# --- the types: JSON round trips ------------------------------------------------------------------------
def test_round_trips_through_json():
    d = paired_difference([1, 0, 1, 1], [0, 0, 1, 0], resamples=200)
    c = PairedComparison.of("M1 SUM", "SC", d, metric="accuracy", group="math")
    back = json.loads(json.dumps(c.to_dict()))
    assert PairedComparison.from_dict(back) == c and (back["metric"], back["group"]) == ("accuracy", "math")
    assert set(PairedComparison.of("x", "y", d).to_dict()) == {"a", "b", "estimate", "low", "high", "n", "confidence",
                                                              "wins", "losses", "ties", "text", "excludes_zero"}
    iv = Interval(0.5, 0.25, 0.75, 4)
    acc = MethodAccuracy("M1 MAX", "stu", 0.5, 2, 4, iv)
    assert MethodAccuracy.from_dict(json.loads(json.dumps(acc.to_dict()))) == acc
    assert acc.cell() == "50.0% [25.0, 75.0] (2/4)" and MethodAccuracy("SC", None, 0.25, 1, 4).cell() == "25.0% (1/4)"
    rows = [MethodAccuracy("SC", None, 0.25, 1, 4), acc]
    assert MethodAccuracy.table(rows) == {"SC": {"all": {"accuracy": 0.25, "correct": 1, "n": 4}},
                                          "M1 MAX": {"stu": {"accuracy": 0.5, "correct": 2, "n": 4}}}
    assert MethodAccuracy.from_table(MethodAccuracy.table(rows)) == [rows[0], MethodAccuracy("M1 MAX", "stu", 0.5, 2, 4)]
    nan_rel = Interval(float("nan"), float("nan"), float("nan"), 4)
    p = Fig4Point(4, {"SC": iv}, {"M1 SUM": nan_rel}, {"M1 SUM": d}, pairs=2)
    q = Fig4Point.from_dict(json.loads(json.dumps(p.to_dict())))
    assert (q.pairs, q.n, q.accuracy, q.difference) == (2, 4, {"SC": iv}, {"M1 SUM": d})
    assert q.relative["M1 SUM"].n == 4 and q.relative["M1 SUM"].estimate != q.relative["M1 SUM"].estimate  # nan
    lv = Fig4Point.from_dict(Fig4Point(3, {"SC": iv}, {}, level=5).to_dict())
    assert (lv.level, lv.pairs) == (5, None)


def test_m3_round_keeps_the_report_layout():
    rec = {"round": 1, "beam": [{"score": 0.75, "demos": [["x", "Yes"]]}, {"score": 0.5, "demos": []}],
           "calls": {"total": 9}, "candidates": [1, 2, 3], "new": [1], "reflections": [{"reasons": ["a", "b"]}],
           "exams": [{"student": "s", "failed": [1], "answered": 4}], "seconds": 2.5}
    evals = {"teacher": {"f1": 0.5, "accuracy": 0.6, "n": 10, "calls": 10, "cached": 2}}
    r = M3Round.from_record(rec, evals)
    d = r.to_dict()
    assert list(d) == ["f1", "accuracy", "n_test", "train_score", "beam_scores", "best_demos", "calls", "eval_calls",
                       "eval_cached", "seconds", "candidates", "new_sets", "dropped", "reflections", "reasons",
                       "failures", "exam_answered", "init_fallback"]
    assert (d["train_score"], d["beam_scores"], d["candidates"], d["reasons"], d["failures"], d["eval_cached"]) == (
        0.75, [0.75, 0.5], 3, 2, {"s": 1}, 2)
    assert M3Round.from_dict(d) == r


def test_docstring_examples():
    import doctest

    import lbt_dspy.results
    import lbt_dspy.tables

    for mod in (lbt_dspy.results, lbt_dspy.tables):
        failed, tried = doctest.testmod(mod)
        assert tried and not failed, mod.__name__
