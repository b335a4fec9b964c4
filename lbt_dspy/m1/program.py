"""The M1 program: teach, examine, score, select — one problem at a time, as a DSPy module."""

from __future__ import annotations

import dspy

from ..lbt_score import LbTScore
from ..teacher import Teacher
from .select import METHODS, Candidate


class M1(dspy.Module):
    """Answers one problem the LbT way: teach, examine, score, select.

    Args:
        teacher: Samples the TR-TA pairs.
        lbt_score: Scores a pair by the students' exam (an `LbTScore`).
        method: ``"M1 SUM"`` (score-weighted vote over equivalent answers) or ``"M1 MAX"``, or ``"SC"``.

    Example:
        >>> m1 = M1(Teacher(lm=teacher_lm, num_samples=8),  # doctest: +SKIP
        ...         LbTScore([Student(lm=student_lm)], FunctionalExamMaker(bank), MathScorer()))
        >>> pred = m1(item={"unique_id": "test/algebra/1.json", "question": "..."})  # doctest: +SKIP
        >>> pred.answer, [c.lbt_score for c in pred.candidates]  # doctest: +SKIP
    """

    def __init__(self, teacher: Teacher, lbt_score: LbTScore, method: str = "M1 SUM"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}")
        self.teacher = teacher
        self.lbt_score = lbt_score
        self.method = method

    def forward(self, item: dict) -> dspy.Prediction:
        pairs = self.teacher(question=item["question"])
        candidates = [Candidate(p.answer, self.lbt_score(item=item, rationale=p.rationale, answer=p.answer).score, i)
                      for i, p in enumerate(pairs)]
        best = METHODS[self.method](candidates, self.lbt_score.scorer.equivalent)
        if best is None:
            return dspy.Prediction(answer="", rationale="", candidates=candidates)
        return dspy.Prediction(answer=best.answer, rationale=pairs[best.index].rationale, candidates=candidates)
