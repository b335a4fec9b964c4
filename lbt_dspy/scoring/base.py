"""The exam-scorer registry (`exam_scorer_type` / `exam_scorer_cfg`) and its interface."""

from __future__ import annotations

from ..registry import Registry

exam_scorers = Registry("exam_scorer")


class ExamScorer:
    """Interface of an exam scorer.

    A scorer extracts the answer from a model's raw output, scores it against a reference, and says
    when two answers are the same (for voting). Subclasses register with ``@exam_scorers.register``.
    """

    def extract(self, text: str) -> str:
        raise NotImplementedError

    def score(self, answer: str, reference) -> float:
        raise NotImplementedError

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()
