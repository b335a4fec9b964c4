"""M1: pick the teacher's final answer by LbT score.

`program` (the `M1` DSPy module), `select` (SC, M1 MAX, M1 SUM), `adaptive` (the exam scheduler),
`run` (the resumable `lbt m1` over a dataset), `results` (records -> scores and picks), `report`.

Importing any of these runs this file first, so it loads only the pure selection rules (`select`, no
lbt_dspy imports): a lower layer may import `lbt_dspy.m1.select` or `lbt_dspy.m1.adaptive` (`M1Config`
checks ``exam_budget_cfg`` with the scheduler) without pulling in the run, `components` and the config
back. `M1`, `run_m1` and `tp_key` load on first use (``from lbt_dspy.m1 import run_m1`` works as before).
"""

from .select import METHODS, Pair, group_answers, m1_max, m1_sum, self_consistency

_LAZY = {"M1": "program", "run_m1": "run", "tp_key": "results"}

__all__ = ["M1", "run_m1", "tp_key", "METHODS", "Pair", "group_answers", "m1_max", "m1_sum",
           "self_consistency"]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    if name == "Candidate":  # the earlier name of Pair (warns)
        from . import select

        return select.Candidate
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
