"""M1: pick the teacher's final answer by LbT score.

`program` (the `M1` DSPy module), `select` (SC, M1 MAX, M1 SUM), `adaptive` (the exam scheduler),
`run` (the resumable `lbt m1` over a dataset), `results` (records -> scores and picks), `report`.
"""

from .program import M1
from .run import run_m1, tp_key
from .select import METHODS, Candidate, Pair, group_answers, m1_max, m1_sum, self_consistency

__all__ = ["M1", "run_m1", "tp_key", "METHODS", "Candidate", "Pair", "group_answers", "m1_max", "m1_sum",
           "self_consistency"]
