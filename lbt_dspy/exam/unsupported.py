"""Seed exam scorers lbt does not provide: each is registered so that a seed config naming it gets a
one-line error saying what to use instead, never an "unknown type" guess or a traceback."""

from __future__ import annotations

from ..errors import LbtError
from ..scoring import exam_scorers

_INSTEAD = {
    "code_submit": "LeetCode submission of every answer (needs a LeetCode session); use exam_scorer_type code, "
                   "which runs the problem's tests in lbt's sandbox",
    "code_apps": "APPS stdin/stdout tests; use exam_scorer_type code with assert-style tests",
    "code_choose": "the choose-an-answer-number scorer, which always scored 0 in the seed; use exam_scorer_type code",
    "model_based": "an LLM judge, unfinished in the seed (it returned no score); use exam_scorer_type math or code",
}


def _refuse(type_name: str):
    class _Unsupported:
        def __init__(self, **kwargs):
            raise LbtError(f"exam_scorer_type {type_name}: not supported ({_INSTEAD[type_name]})")

    _Unsupported.__name__ = f"Unsupported_{type_name}"
    return _Unsupported


for _name in _INSTEAD:
    exam_scorers.register(_name)(_refuse(_name))
