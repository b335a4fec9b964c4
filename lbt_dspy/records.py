"""The one way a generation becomes a run record, and the one way a record is graded.

A record holds the caller's key fields, the prediction's ``rationale`` and ``answer``, what the model
said as it said it (``completion``, the raw text, when the adapter kept one; ``unparsed`` and ``cut_off``
flags, see `lbt_dspy.model_output`), and, when graded, ``score`` plus the scorer's extra grades (code: the
hidden-test ``s_score``). Records made before the flags existed simply lack them.

Example:
    >>> import dspy
    >>> prediction_record(dspy.Prediction(rationale="2+2=4", answer="4"), key="p0")
    {'key': 'p0', 'rationale': '2+2=4', 'answer': '4'}
"""

from __future__ import annotations

import dspy

OUTPUT_FLAGS = ("completion", "unparsed", "cut_off")


def prediction_record(pred, **meta) -> dict:
    """`meta`, then the prediction's rationale and answer, and ``completion``, ``unparsed``, ``cut_off`` when
    it has them (None values are left out)."""
    rec = {**meta, "rationale": _get(pred, "rationale"), "answer": _get(pred, "answer")}
    for name in OUTPUT_FLAGS:
        value = _get(pred, name)
        if value is not None:
            rec[name] = value
    return rec


def _get(pred, name):
    try:  # a dict, or a dspy.Prediction (whose `get` reads its fields without raising for a missing one)
        return pred.get(name) if isinstance(pred, (dict, dspy.Example)) else getattr(pred, name, None)
    except (AttributeError, KeyError):
        return None


def grade(scorer, answer: str, reference) -> dict:
    """``score`` of `answer` against `reference` plus the scorer's extra grades (`ExamScorer.judge`)."""
    return {"score": scorer.score(answer, reference), **scorer.judge(answer, reference)}


def correct(record: dict) -> float:
    """A graded record's correctness: the held-out grade where the scorer gives one (code: ``s_score``, the
    hidden tests), else ``score``."""
    return record.get("s_score", record["score"])
