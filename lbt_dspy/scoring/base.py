"""The exam-scorer registry (`exam_scorer_type` / `exam_scorer_cfg`) and its interface."""

from __future__ import annotations

from ..registry import Registry

exam_scorers = Registry("exam_scorer")


class ExamScorer:
    """Interface of an exam scorer.

    A scorer extracts the answer from a model's raw output, scores it against a reference, and says
    when two answers are the same (for voting). Subclasses register with ``@exam_scorers.register``.
    """

    def reference(self, item: dict):
        """What `score` compares against for a dataset item (the answer; code scorers take the tests)."""
        return item["answer"]

    def extract(self, text: str) -> str:
        raise NotImplementedError

    def score(self, answer: str, reference) -> float:
        raise NotImplementedError

    def judge(self, answer: str, reference) -> dict:
        """Extra grades of a teacher answer, merged into its record (code: the hidden-test ``s_score``)."""
        return {}

    def equivalent(self, a: str, b: str) -> bool:
        return a.strip() == b.strip()
