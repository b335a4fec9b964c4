"""The one way a generation becomes a run record, and the one way a record is graded.

A record holds the caller's key fields, the prediction's ``rationale`` and ``answer`` (and its raw
``completion`` when the adapter kept one), and, when graded, ``score`` plus the scorer's extra grades
(code: the hidden-test ``s_score``).

Example:
    >>> import dspy
    >>> prediction_record(dspy.Prediction(rationale="2+2=4", answer="4"), key="p0")
    {'key': 'p0', 'rationale': '2+2=4', 'answer': '4'}
"""

from __future__ import annotations


def prediction_record(pred, **meta) -> dict:
    """`meta`, then the prediction's rationale and answer (and ``completion`` when it has one)."""
    rec = {**meta, "rationale": pred.rationale, "answer": pred.answer}
    completion = getattr(pred, "completion", None)
    if completion is not None:
        rec["completion"] = completion
    return rec


def grade(scorer, answer: str, reference) -> dict:
    """``score`` of `answer` against `reference` plus the scorer's extra grades (`ExamScorer.judge`)."""
    return {"score": scorer.score(answer, reference), **scorer.judge(answer, reference)}


def correct(record: dict) -> float:
    """A graded record's correctness: the held-out grade where the scorer gives one (code: ``s_score``, the
    hidden tests), else ``score``."""
    return record.get("s_score", record["score"])
