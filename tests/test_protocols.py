"""The paper's protocols (lbt_dspy.m1.protocols) and the report's evidence on run directories built by hand
with known answers: Table A6 subsampling, Fig. 4, per-problem scores, published rows, the report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lbt_dspy.config import M1Config
from lbt_dspy.m1.protocols import (PAPER_TABLE2, PAPER_TABLE_A6, fig4_sizes, method_scores, paper_name,
                                   problem_levels, protocols, published_rows, table_a6)
from lbt_dspy.m1.report import write_report
from lbt_dspy.m1.results import load_run, memo_equivalent, summarize
from lbt_dspy.results import Fig4Point, TableA6
from lbt_dspy.scoring import exam_scorers
from lbt_dspy.store import RunStore

ROOT = Path(__file__).resolve().parents[1]

# Pair layouts (answer, correct, LbT score), pair order = index order. The reference answer is "1".
# A: 5 wrong pairs first (LbT 0), then 3 right ones (LbT 1): SC(all) wrong, M1 right; with 4 random pairs
#    M1 is right iff a right pair is drawn (65 of the 70 subsets), SC iff 3 right and 1 wrong are drawn (5 of 70;
#    2-2 ties go to the earlier group, the wrong one).
# B: all 8 right. C: all 8 wrong.
LAYOUT = {
    "A": [("2", 0.0, 0.0)] * 5 + [("1", 1.0, 1.0)] * 3,
    "B": [("1", 1.0, 0.5)] * 8,
    "C": [("3", 0.0, 0.5)] * 4 + [("4", 0.0, 0.0)] * 4,
}


def make_run(path: Path, kinds: list[str], cfg_over: dict | None = None, tps: list[str] | None = None,
             greedy_right: set | None = None) -> Path:
    """A run directory with one problem per entry of `kinds` (layouts above), one student, 1 exam slot per
    pair whose score is the pair's LbT score."""
    raw = {"dataset_type": "arith", "dataset_cfg": {"num_families": len(kinds)}, "num_rationales": 8,
           "student_model_cfgs": [{"model_type": "embedded"}], **(cfg_over or {})}
    cfg = M1Config.from_dict(raw)
    store = RunStore(path, cfg.to_dict())
    tps = tps or [f"p{j:02d}" for j in range(len(kinds))]
    for j, (tp, kind) in enumerate(zip(tps, kinds)):
        ok = greedy_right is None or j in greedy_right
        store.append("greedy", {"key": tp, "tp": tp, "answer": "1" if ok else "9", "rationale": "", "score": float(ok)})
        for i, (ans, right, lbt) in enumerate(LAYOUT[kind]):
            store.append("teach", {"key": f"{tp}/{i}", "tp": tp, "sample": i, "answer": ans, "rationale": "r",
                                   "score": right})
            store.append("exam", {"key": f"{tp}/{i}/stu/0", "tp": tp, "sample": i, "student": "stu", "slot": 0,
                                  "answer": "x", "rationale": "", "score": lbt})
    store.close()
    return path


def _eq(run):
    cfg, problems = load_run(run)
    return cfg, problems, memo_equivalent(exam_scorers.build(vars(cfg)).equivalent)


def test_method_scores_match_the_run_table(tmp_path):
    run = make_run(tmp_path / "run", ["A", "B", "C", "A"], greedy_right={1})
    cfg, problems, eq = _eq(run)
    per = method_scores(problems, ["stu"], eq)["stu"]
    assert per["SC"] == {"p00": 0.0, "p01": 1.0, "p02": 0.0, "p03": 0.0}
    assert per["M1 SUM"] == per["M1 MAX"] == {"p00": 1.0, "p01": 1.0, "p02": 0.0, "p03": 1.0}
    assert per["Greedy"] == {"p00": 0.0, "p01": 1.0, "p02": 0.0, "p03": 0.0}
    table = summarize(run)["table"]
    for m in ("SC", "M1 SUM", "M1 MAX", "Greedy", "AVG"):
        assert table[m].get("stu", table[m].get("all"))["accuracy"] == pytest.approx(sum(per[m].values()) / 4)


def test_table_a6_subsampling_on_known_answers(tmp_path):
    kinds = ["A"] * 6 + ["B"] * 3 + ["C"] * 3
    run = make_run(tmp_path / "run", kinds)
    cfg, problems, eq = _eq(run)
    a6 = table_a6(problems, "stu", eq, k=4, subsets=300, seed=1)
    n = len(kinds)
    assert (a6.k, a6.subsets, a6.n, a6.pairs) == (4, 300, n, 8)
    assert a6.sc_all == pytest.approx(3 / n)  # only the B problems
    # expected accuracies with 4 of 8 pairs: A problems contribute 65/70 (M1) and 5/70 (SC)
    assert a6.at_k["M1 SUM"].mean == pytest.approx((6 * 65 / 70 + 3) / n, abs=0.02)
    assert a6.at_k["M1 MAX"].mean == pytest.approx((6 * 65 / 70 + 3) / n, abs=0.02)
    assert a6.at_k["SC"].mean == pytest.approx((6 * 5 / 70 + 3) / n, abs=0.02)
    # the spread over subsets is that of 6 independent Bernoulli(65/70) problems
    sd = (6 * (65 / 70) * (5 / 70)) ** 0.5 / n
    assert a6.at_k["M1 SUM"].std == pytest.approx(sd, rel=0.25)
    assert a6.improvement("M1 SUM") == pytest.approx(a6.at_k["M1 SUM"].mean - 3 / n)
    d = a6.comparison("M1 SUM")
    assert (d.a, d.b) == ("M1 SUM", "SC") and d.difference.low > 0 and d.wins == 6 and d.losses == 0
    # seeded: the same table again; another seed, other subsets
    assert table_a6(problems, "stu", eq, k=4, subsets=300, seed=1) == a6
    assert table_a6(problems, "stu", eq, k=4, subsets=300, seed=2).at_k["M1 SUM"] != a6.at_k["M1 SUM"]
    # summary.json's layout reads back to the same table
    assert TableA6.from_dict(json.loads(json.dumps(a6.to_dict()))) == a6


def test_a6_is_emitted_only_with_more_pairs_than_k(tmp_path):
    run = make_run(tmp_path / "run", ["A", "B", "C"])
    assert protocols(run)["a6"] is None  # 8 pairs, default k = 24
    ev = protocols(run, a6_pairs=4, a6_subsets=5)
    assert ev["a6"]["k"] == 4 and ev["a6"]["subsets"] == 5
    run2 = make_run(tmp_path / "run2", ["A", "B", "C"], {"a6_pairs": 6, "a6_subsets": 3})
    assert protocols(run2)["a6"]["k"] == 6


def test_fig4_all_pairs_point_equals_the_table_and_sizes(tmp_path):
    assert fig4_sizes(8) == [1, 2, 4, 8] and fig4_sizes(6) == [1, 2, 4, 6]
    assert fig4_sizes(256) == [16, 32, 64, 128, 256] and fig4_sizes(40) == [16, 32, 40]
    assert fig4_sizes(8, [2, 3, 99]) == [2, 3]
    run = make_run(tmp_path / "run", ["A", "A", "B", "C"])
    ev = protocols(run)
    last = Fig4Point.from_dict(ev["fig4"][-1])
    assert last.pairs == 8 and last.n == 4
    assert last.accuracy["SC"].estimate == pytest.approx(1 / 4)
    assert last.accuracy["M1 SUM"].estimate == pytest.approx(3 / 4)
    assert last.relative["M1 SUM"].estimate == pytest.approx(2.0)  # 75% / 25% - 1
    one = Fig4Point.from_dict(ev["fig4"][0])  # 1 pair: M1 = SC = the drawn pair's correctness
    assert one.pairs == 1 and one.relative["M1 SUM"].estimate == pytest.approx(0.0)
    # summary.json's curve is the same computation: Fig. 4's estimates, and at all pairs the accuracy table's
    summary = summarize(run)
    assert summary["curve"]["sizes"] == [p["pairs"] for p in ev["fig4"]]
    for m in ("SC", "M1 MAX", "M1 SUM"):
        assert summary["curve"][m] == [Fig4Point.from_dict(p).accuracy[m].estimate for p in ev["fig4"]]
        cells = summary["table"][m]
        assert summary["curve"][m][-1] == pytest.approx(cells.get("stu", cells.get("all"))["accuracy"])


def test_levels_and_published_rows_for_math181(tmp_path):
    rows = [json.loads(x) for x in (ROOT / "data" / "math181" / "teaching_problems.jsonl").read_text().splitlines()[:6]]
    ids = [r["unique_id"] for r in rows]
    llama = {"model_type": "vllm", "model_cfg": {"model": "meta-llama/Meta-Llama-3-8B-Instruct",
                                                 "api_base": "http://x/v1"}}
    run = make_run(tmp_path / "run", ["A", "B", "C", "A", "B", "C"], tps=ids,
                   cfg_over={"dataset_type": "math181", "dataset_cfg": {"limit": 6}, "teacher_model_cfg": llama,
                             "student_model_cfgs": [llama]})
    cfg = M1Config.from_dict(RunStore(run).read_config())
    levels = problem_levels(cfg)
    assert levels == {r["unique_id"]: r["level"] for r in rows}
    pub = published_rows(cfg)
    assert pub["table2"]["M1 SUM"] == 82.87 and pub["a6"]["M1 SUM(24)"] == (72.93, 2.15)
    ev = protocols(run)
    assert sum(r["n"] for r in ev["levels"]) == 6
    report = write_report(run).read_text()
    assert "paper, Table 2 (LLaMA3-8B → LLaMA3-8B) | 181 | 256 | 45.85 | 64.64 | 77.90 | 82.87 | +18.23 |" in report
    assert "### By difficulty level" in report and (run / "fig4_relative_improvement.png").stat().st_size > 1000


def test_no_published_row(tmp_path):
    other = {"model_type": "openai", "model_cfg": {"model": "Llama-3.1-8B-Instruct"}}
    cfg = M1Config.from_dict({"dataset_type": "math181", "teacher_model_cfg": other, "student_model_cfgs": [other]})
    pub = published_rows(cfg)
    assert pub["table2"] is None and "not one of the paper's models" in pub["why"]
    gpt = {"model_type": "openai", "model_cfg": {"model": "gpt-4o"}}
    mini = {"model_type": "openai", "model_cfg": {"model": "gpt-4o-mini"}}
    assert published_rows(M1Config.from_dict({"dataset_type": "math181", "teacher_model_cfg": gpt,
                                               "student_model_cfgs": [mini]}))["table2"]["M1 SUM"] == 96.69
    pub = published_rows(M1Config.from_dict({"dataset_type": "math181", "teacher_model_cfg": mini,
                                              "student_model_cfgs": [gpt]}))
    assert pub["table2"] is None and "no row for teacher GPT-4o mini" in pub["why"]
    assert published_rows(M1Config.from_dict({"dataset_type": "arith"}))["applies"] is False
    assert paper_name("mistralai/Mistral-7B-Instruct-v0.3") == "Mistral-7B" and paper_name("gpt-3.5-turbo") == "GPT-3.5"
    assert paper_name("Meta-Llama-3-70B-Instruct") == "LLaMA3-70B" and paper_name("Llama-3.2-1B") is None
    assert set(PAPER_TABLE2) == set(PAPER_TABLE_A6) and len(PAPER_TABLE2) == 11
    for key, (g, sc, mx, sm, imp) in PAPER_TABLE2.items():  # the paper's Improv. is M1 SUM - SC
        assert imp == pytest.approx(sm - sc, abs=0.011), key


def test_report_has_intervals_comparisons_and_counts(tmp_path):
    run = make_run(tmp_path / "run", ["A"] * 4 + ["B"] * 3 + ["C"] * 3, greedy_right={4, 5})
    summary = summarize(run)
    text = write_report(run, summary, a6_pairs=4, a6_subsets=4).read_text()
    assert "## Accuracy (10 problems)" in text and "| method (10 problems) |" in text
    assert "| SC | 30.0% [" in text and "(3/10)" in text
    assert "| M1 SUM − SC | +40.0 pts [" in text and "| 4 / 0 / 6 | 10 | resolved" in text
    assert "M1 SUM − Greedy" in text and "M1 MAX − SC" in text
    assert "M1 with k = 4 TR-TA pairs" in text and "k = 4 because the run has 8 pairs" in text
    assert "No published row" in text and "## Accuracy vs number of TR-TA pairs" in text
    for png in ("accuracy_by_method", "method_differences", "accuracy_vs_pairs", "fig4_relative_improvement",
                "table_a6", "lbt_score_hist"):
        assert (run / f"{png}.png").stat().st_size > 1000, png
    saved = json.loads((run / "summary.json").read_text())
    assert saved["evidence"]["comparisons"][0]["a"] == "M1 SUM"
    # reproducible: a second report is byte-identical
    assert write_report(run, a6_pairs=4, a6_subsets=4).read_text() == text


def test_lbt_report_cli_a6_flags(tmp_path):
    run = make_run(tmp_path / "run", ["A", "B", "C"])
    out = subprocess.run([sys.executable, "-m", "lbt_dspy.cli", "report", str(run), "--a6-pairs", "4",
                          "--a6-subsets", "3"], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert "M1 with k = 4 TR-TA pairs" in (run / "report.md").read_text()
    assert "| SC |" in out.stdout and "| M1 SUM − SC | +" in (run / "report.md").read_text()
    bad = subprocess.run([sys.executable, "-m", "lbt_dspy.cli", "report", str(run), "--a6-pairs", "0"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert bad.returncode == 2 and "a6-pairs" in bad.stderr and "Traceback" not in bad.stderr
