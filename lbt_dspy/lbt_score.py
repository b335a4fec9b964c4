"""The LbT score of a TR-TA pair: how well students who learn from it do on its exam."""

from __future__ import annotations

from statistics import mean

import dspy

from .scoring.base import ExamScorer
from .student import Student


class LbTScore(dspy.Module):
    """Scores a TR-TA pair by the students' exam accuracy (mean over exam problems; then over students).

    Args:
        students: The `Student` modules that take the exam.
        exam_maker: Gives the exam problems of a teaching item (see `lbt_dspy.exam`).
        scorer: Extracts and scores the students' answers.

    Example:
        >>> lbt = LbTScore([Student(lm)], FunctionalExamMaker(bank), MathScorer())  # doctest: +SKIP
        >>> out = lbt(item={"unique_id": "a", "question": "2+2?"}, rationale="2+2=4", answer="4")  # doctest: +SKIP
        >>> out.score, out.per_student  # doctest: +SKIP
        (0.67, {'smollm2-135m': 0.67})
        >>> evaluate = dspy.Evaluate(devset=tps, metric=lbt.metric)  # as a DSPy metric  # doctest: +SKIP
    """

    def __init__(self, students: list[Student], exam_maker, scorer: ExamScorer):
        super().__init__()
        self.students = students
        self.exam_maker = exam_maker
        self.scorer = scorer

    def forward(self, item: dict, rationale: str, answer: str) -> dspy.Prediction:
        demo = dspy.Example(question=item["question"], rationale=rationale, answer=answer)
        exam = self.exam_maker.make_exam_questions([item])
        per_student = {}
        for student in self.students:
            scores = [self.scorer.score(student(question=ep["question"], demos=[demo], rollout_id=slot).answer,
                                        self.scorer.reference(ep)) for slot, ep in enumerate(exam)]
            per_student[student.name] = mean(scores) if scores else 0.0
        return dspy.Prediction(score=mean(per_student.values()), per_student=per_student)

    def metric(self, example, pred, trace=None) -> float:
        """A DSPy metric: `example` is the teaching item, `pred` carries ``rationale`` and ``answer``."""
        return self(item=dict(example), rationale=pred.rationale, answer=pred.answer).score
