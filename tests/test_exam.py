"""Exam makers and teaching plans."""

import pytest

from lbt_dspy.errors import LbtError
from lbt_dspy.exam import FixedExamMaker, FunctionalExamMaker, MetaInfoExamMaker, resolve_teaching_plans

BANK = [{"unique_id": u, "question": f"{u}{i}", "answer": str(i), "subject": s}
        for u, s in (("a", "alg"), ("b", "alg"), ("c", "geo")) for i in range(3)]


def test_func_maker_repeats_variants_in_paper_order():
    exam = FunctionalExamMaker(BANK, 3, 3).make_exam_questions([{"unique_id": "b"}])
    assert [q["question"] for q in exam] == ["b0", "b1", "b2"] * 3


def test_func_maker_refuses_more_variants_than_exist():
    with pytest.raises(LbtError, match="num_exam_questions"):
        FunctionalExamMaker(BANK, 4, 1).make_exam_questions([{"unique_id": "a"}])


def test_fixed_maker_and_selected_indexes():
    assert len(FixedExamMaker(BANK).make_exam_questions([])) == 9
    assert [q["question"] for q in FixedExamMaker(BANK, [0, 4]).make_exam_questions([])] == ["a0", "b1"]
    with pytest.raises(LbtError, match="out of range"):
        FixedExamMaker(BANK, [99])


def test_metainfo_maker_same_subject_other_problem():
    exam = MetaInfoExamMaker(BANK, ["subject"], num_exam_questions=3).make_exam_questions(
        [{"unique_id": "a", "question": "a0", "subject": "alg"}])
    assert {q["unique_id"] for q in exam} == {"b"}
    with pytest.raises(LbtError):
        MetaInfoExamMaker(BANK, ["subject"], num_exam_questions=4).make_exam_questions(
            [{"unique_id": "c", "question": "c0", "subject": "geo"}])


def test_teaching_plans():
    assert [p.indexes for p in resolve_teaching_plans("every", 3)] == [[0], [1], [2]]
    assert [p.indexes for p in resolve_teaching_plans(None, 2)] == [[0], [1]]
    nd = resolve_teaching_plans("no demo", 5)
    assert len(nd) == 1 and nd[0].indexes == [] and not nd[0].show_demos
    plans = resolve_teaching_plans([[0], [1, 2], ["question-only", 2]], 3)
    assert [p.indexes for p in plans] == [[0], [1, 2], [2]]
    assert [p.show_demos for p in plans] == [True, True, False]


@pytest.mark.parametrize("bad, msg", [
    ([[0, 3]], "out of range"), ("sometimes", "unknown value"), ([0], "expected a list"), ([["x"]], "not an index"),
])
def test_bad_teaching_plans(bad, msg):
    with pytest.raises(LbtError, match=msg):
        resolve_teaching_plans(bad, 3)
