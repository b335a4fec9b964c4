"""M1 for code: HumanEval data, the `similar` exam maker, the code table, and a run against the scripted server."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import fake_config

from lbt_dspy.config import M1Config
from lbt_dspy.data import datasets
from lbt_dspy.errors import LbtError
from lbt_dspy.exam import exam_makers
from lbt_dspy.exam.similar import SimilarExamMaker, tokenize
from lbt_dspy.m1 import run_m1
from lbt_dspy.m1.report import accuracy_table, code_table, write_report
from lbt_dspy.m1.results import code_summary, code_table_rows, summarize
from lbt_dspy.results import PairExam, find_code_score
from lbt_dspy.scoring.code import CodeScorer

ROOT = Path(__file__).resolve().parents[1]
LBT = [sys.executable, "-m", "lbt_dspy.cli"]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-PLANTED-SECRET-1234")


# --- data ------------------------------------------------------------------------------------------
def test_humaneval_dataset_selects_problems_offline():
    data = datasets.build({"dataset_type": "humaneval", "dataset_cfg": {"limit": 3, "offset": 2}})
    assert [p["unique_id"] for p in data.teaching] == ["HumanEval/2", "HumanEval/3", "HumanEval/4"]
    assert data.exam_bank == data.teaching
    tp = data.teaching[0]
    assert tp["question"] == tp["prompt"] and tp["entry_point"] == "truncate_number"
    assert tp["visible"] and set(tp["visible"]) <= set(tp["hidden"])
    picked = datasets.build({"dataset_type": "humaneval", "dataset_cfg": {"task_ids": [7, "HumanEval/0"],
                                                                         "exam_bank": "all"}})
    assert [p["unique_id"] for p in picked.teaching] == ["HumanEval/7", "HumanEval/0"]
    assert len(picked.exam_bank) == 164
    with pytest.raises(LbtError, match="unknown task"):
        datasets.build({"dataset_type": "humaneval", "dataset_cfg": {"task_ids": ["HumanEval/999"]}})
    # the canonical solution scores 1 on both test sets
    scorer = CodeScorer()
    assert scorer.reference(tp) is tp
    assert scorer.score(tp["answer"], tp) == 1.0 and scorer.judge(tp["answer"], tp) == {"s_score": 1.0}


def test_leetcode_dataset(tmp_path):
    rows = [{"task_id": f"t{i}", "question": f"Write code {i}", "answer": "",
             "signature": "class Solution():\n    def f(self, x)", "test": f"assert Solution().f({i}) == {i}",
             "tags": "Dynamic Programming"} for i in range(3)]
    path = tmp_path / "dataset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = datasets.build({"dataset_type": "leetcode", "dataset_cfg": {"path": str(path), "limit": 2}})
    assert [p["unique_id"] for p in data.teaching] == ["t0", "t1"] and len(data.exam_bank) == 3
    assert data.teaching[0]["entry_point"] == "f" and data.teaching[0]["visible"] == ["assert Solution().f(0) == 0"]


# --- the `similar` exam maker --------------------------------------------------------------------------
def _bank():
    return [
        {"unique_id": "a", "question": "count the ways to climb stairs taking one or two steps", "tags": "DP"},
        {"unique_id": "b", "question": "minimum cost to climb stairs with one or two steps", "tags": "Graph"},
        {"unique_id": "c", "question": "longest increasing subsequence of an array", "tags": "DP, Array"},
        {"unique_id": "d", "question": "number of coin combinations that make an amount", "tags": "Dynamic Programming, DP"},
        {"unique_id": "e", "question": "shortest path in a weighted graph", "tags": "Graph"},
    ]


def _ids(exam):
    return [e["unique_id"] for e in exam]


def test_similar_prefers_same_tag_then_similarity():
    bank = _bank()
    maker = exam_makers.build({"exam_maker_type": "similar", "exam_maker_cfg": {"num_exam_questions": 2}},
                              exam_bank_dataset=bank)
    # "a" is worded like "b" (Graph), but two other problems carry its tag DP: those, most similar first
    assert sorted(_ids(maker.make_exam_questions([bank[0]]))) == ["c", "d"]
    # "b" (Graph) has only one other Graph problem: too few, so the 2 most similar of all others
    assert _ids(maker.make_exam_questions([bank[1]]))[0] == "a"
    # without tags it is pure similarity; the TP itself never appears
    plain = SimilarExamMaker(bank, num_exam_questions=1, tag_key=None)
    assert _ids(plain.make_exam_questions([bank[0]])) == ["b"]
    assert _ids(SimilarExamMaker(bank, 1, tag_key=None, similarity="jaccard").make_exam_questions([bank[0]])) == ["b"]
    # tag_match any: "c" (DP, Array) matches problems with DP or Array
    anym = SimilarExamMaker(bank, 2, tag_match="any")
    assert sorted(_ids(anym.make_exam_questions([bank[2]]))) == ["a", "d"]


def test_similar_on_humaneval_finds_related_problems_and_is_deterministic():
    bank = datasets.build({"dataset_type": "humaneval", "dataset_cfg": {}}).exam_bank
    maker = SimilarExamMaker(bank, num_exam_questions=2, num_repetitions=2)
    tp = bank[7]  # filter_by_substring
    exam = maker.make_exam_questions([tp])
    assert len(exam) == 4 and exam[:2] == exam[2:]
    assert "HumanEval/29" in _ids(exam)  # filter_by_prefix
    assert tp["unique_id"] not in _ids(exam)
    # a fresh maker, asked about other problems first, gives the same exams
    again = SimilarExamMaker(list(bank), num_exam_questions=2, num_repetitions=2)
    for other in (bank[3], bank[0], tp):
        again.make_exam_questions([other])
    assert again.make_exam_questions([tp]) == exam


def test_similar_errors():
    bank = _bank()[:2]
    with pytest.raises(LbtError, match="only 1 other problem"):
        SimilarExamMaker(bank, num_exam_questions=2).make_exam_questions([bank[0]])
    with pytest.raises(LbtError):
        SimilarExamMaker(bank, num_exam_questions=0)
    with pytest.raises(LbtError, match="similarity"):
        SimilarExamMaker(bank, similarity="bert")


def test_tokenize_splits_identifiers():
    assert tokenize("maxSubArray has_close_elements x 42") == ["max", "sub", "array", "has", "close", "elements", "42"]


# --- the code table on hand-made records ------------------------------------------------------------
def _problem(pairs, greedy_s=0.5, student="stu"):
    """pairs: (V-score, S-score, exam scores of `student`)."""
    return {"greedy": {"answer": "g", "score": 1.0, "s_score": greedy_s},
            "pairs": {i: PairExam("p", i, f"a{i}", v, s_score=s, exam={student: tuple(ex)})
                      for i, (v, s, ex) in enumerate(pairs)}}


def test_code_summary_baselines_and_m1_max():
    problems = {
        # the best LbT score (1.0) is shared by pairs 1 and 2: the V=1 one (2) wins the tie
        "p1": _problem([(1.0, 0.6, [0, 1]), (0.0, 0.2, [1, 1]), (1.0, 0.9, [1, 1]), (0.0, 0.0, [0, 0])]),
        # no TA passes its visible tests: "-" for the V=1 rows; all LbT 0 and V 0: the earlier pair
        "p2": _problem([(0.0, 0.3, [0, 0]), (0.0, 0.1, [0, 0])], greedy_s=None),
        # equal LbT and V: the earlier pair
        "p3": _problem([(1.0, 0.4, [1, 0]), (1.0, 1.0, [0, 1])], greedy_s=1.0),
    }
    code = code_summary(problems, ["stu"])
    assert [r.label() for r in code_table_rows(code)] == ["Greedy", "Avg.", "Avg. (V=1)", "M1 MAX", "M1 MAX (V=1)"]
    p1, p2, p3 = (code_table_rows(code, k) for k in ("p1", "p2", "p3"))

    def row(rows, method, visible=False):
        return find_code_score(rows, method, "stu" if method == "M1 MAX" else None, visible)

    assert row(p1, "Avg.").s_score == pytest.approx((0.6 + 0.2 + 0.9 + 0.0) / 4)
    assert row(p1, "Avg.", True).s_score == pytest.approx(0.75)
    assert row(p1, "M1 MAX").pair == 2 and row(p1, "M1 MAX").s_score == 0.9
    assert row(p1, "M1 MAX", True).pair == 2 and code["problems"]["p1"]["num_v1"] == 2
    assert row(p2, "Avg.", True).s_score is None and row(p2, "M1 MAX", True).s_score is None
    assert row(p2, "M1 MAX").pair == 0 and row(p2, "M1 MAX").s_score == 0.3
    assert row(p3, "M1 MAX").pair == 0 and row(p3, "M1 MAX").s_score == 0.4
    t = code_table_rows(code)
    assert row(t, "Greedy").n == 2 and row(t, "Greedy").s_score == pytest.approx(0.75)
    assert row(t, "Avg.", True).n == 2 and row(t, "Avg.", True).s_score == pytest.approx((0.75 + 0.7) / 2)
    assert row(t, "M1 MAX").s_score == pytest.approx((0.9 + 0.3 + 0.4) / 3) and row(t, "M1 MAX").of == 3
    assert row(t, "M1 MAX").v_score == pytest.approx(2 / 3)
    table = code_table({"code": code})
    assert "| Avg. (V=1) | 0.725 | 1.000 | 2/3 |" in table
    # per-problem "-" and two students give one M1 row per student view, labelled with its view
    two = code_summary({"p2": _problem([(0.0, 0.3, [0])])}, ["s1", "s2"])
    labels = [r.label(len(two["views"])) for r in code_table_rows(two)]
    assert "M1 MAX [s1]" in labels and "M1 MAX (V=1) [s2]" not in labels
    assert "M1 MAX [s2] (V=1)" in labels
    assert {(r.method, r.view, r.visible) for r in code_table_rows(two)} >= {("M1 MAX", "s2", True)}


def test_math_runs_have_no_code_section():
    problems = {"p": {"greedy": None, "pairs": {0: PairExam("p", 0, "1", 1.0, exam={"s": (1,)})}}}
    assert code_summary(problems, ["s"]) is None


# --- end to end against the scripted server ----------------------------------------------------------
def code_config(api_base: str, **over) -> dict:
    emb = yaml.safe_load((ROOT / "configs" / "humaneval_embedded.yaml").read_text())
    cfg = fake_config(api_base, dataset_type="humaneval", dataset_cfg={"limit": 4}, num_pairs=3,
                      exam_maker_type="similar", exam_maker_cfg={"num_exam_questions": 2, "num_repetitions": 1},
                      exam_prompter_cfg=emb["exam_prompter_cfg"], exam_scorer_type="code",
                      greedy_sample_cfg={"do_sample": False})
    cfg.update(over)
    return cfg


def test_m1_code_run_scores_v_and_s_and_reports_the_code_table(fake_server, tmp_path):
    cfg = M1Config.from_dict(code_config(fake_server.api_base))
    calls = run_m1(cfg, tmp_path / "run", progress=False)
    # 4 TPs: 4 greedy + 4x3 pairs + 4x3 pairs x 1 student x 2 exam problems
    assert (calls["greedy"], calls["teach"], calls["exam"], calls["failed"]) == (4, 12, 24, 0)
    run = tmp_path / "run"
    data = datasets.build({"dataset_type": "humaneval", "dataset_cfg": {"limit": 4}})
    by_id = {p["unique_id"]: p for p in data.teaching}
    scorer = CodeScorer()
    teach = [json.loads(line) for line in open(run / "teach.jsonl")]
    greedy = [json.loads(line) for line in open(run / "greedy.jsonl")]
    for rec in teach + greedy:
        prob = by_id[rec["tp"]]
        assert rec["answer"].startswith(prob["prompt"].strip()[:20])  # the extracted code, not the prose
        assert rec["score"] == scorer.v_score(rec["answer"], prob)
        assert rec["s_score"] == scorer.s_score(rec["answer"], prob)
    assert {r["s_score"] for r in teach} >= {1.0}  # some canonical answers
    assert any(r["score"] == 0.0 for r in teach)  # and some broken ones
    exam = [json.loads(line) for line in open(run / "exam.jsonl")]
    maker = SimilarExamMaker(data.exam_bank, 2, 1)
    for rec in exam:
        ep = maker.make_exam_questions([by_id[rec["tp"]]])[rec["slot"]]
        assert rec["score"] == scorer.v_score(rec["answer"], ep)
        assert "s_score" not in rec  # exams are scored by the visible tests only
    summary = summarize(run)
    code = summary["code"]
    assert set(code["problems"]) == set(by_id)
    for tp in code["problems"]:
        # the scripted students fail after a broken demo, so M1 MAX never does worse than a random TA
        rows = code_table_rows(code, tp)
        m1, avg = find_code_score(rows, "M1 MAX", "fake-student"), find_code_score(rows, "Avg.")
        assert m1.s_score >= avg.s_score - 1e-9
    assert summary["problems"][0]["code"]["s_scores"]
    report = write_report(run, summary).read_text()
    assert "## Code (S-score)" in report and "| M1 MAX (V=1) |" in report and "HumanEval/3" in report
    assert (run / "code_s_score.png").exists()
    assert accuracy_table(summary).startswith("| method | mean S-score")
    # a rerun finds everything done
    assert run_m1(cfg, run, progress=False)["exam"] == 0


def test_lbt_m1_cli_prints_the_code_table(fake_server, tmp_path):
    cfg_file = tmp_path / "code.yaml"
    cfg_file.write_text(yaml.safe_dump(code_config(fake_server.api_base, dataset_cfg={"limit": 3}, num_pairs=2)))
    out = subprocess.run(LBT + ["m1", str(cfg_file), "--output-path", str(tmp_path / "run"), "-q"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={**__import__("os").environ, "FAKE_API_KEY": "sk-test"})
    assert out.returncode == 0, out.stderr
    assert "mean S-score" in out.stdout and "Avg. (V=1)" in out.stdout
    assert "## Code (S-score)" in (tmp_path / "run" / "report.md").read_text()
