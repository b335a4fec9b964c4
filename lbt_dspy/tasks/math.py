"""Math word problems: answers checked by math-verify equivalence, voted over equivalent answers."""

from __future__ import annotations

from .base import Task


class MathTask(Task):
    """Math (the paper's MATH181, arithmetic families, your JSONL): `MathScorer`, exams of the teaching
    problem's variants (``func``), Greedy / SC / M1 MAX / M1 SUM / AVG by accuracy.

    Example:
        >>> MathTask().defaults["exam_scorer_type"], MathTask().vote
        ('math', True)
    """

    name = "math"
    defaults = {"dataset_type": "math181", "exam_scorer_type": "math", "exam_maker_type": "func"}
    scorer_type = "math"
    vote = True
    methods = ("Greedy", "SC", "M1 MAX", "M1 SUM", "AVG")
