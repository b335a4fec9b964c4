"""Code generation: answers run against tests in the sandbox; never voted; picks judged by hidden tests."""

from __future__ import annotations

from .base import Task


class CodeTask(Task):
    """Code (HumanEval, LeetCode): `CodeScorer` (V-score on visible tests in exams, S-score on hidden tests
    for picks), exams of similar problems (``similar``), M1 MAX with the V-score tie-break; the report
    shows the paper's code rows (Greedy, Avg., Avg. (V=1), M1 MAX, M1 MAX (V=1)) by S-score.

    Example:
        >>> CodeTask().vote, CodeTask().tie_break
        (False, 'v_score')
    """

    name = "code"
    defaults = {"dataset_type": "humaneval", "exam_scorer_type": "code", "exam_maker_type": "similar"}
    scorer_type = "code"
    vote = False
    tie_break = "v_score"
    methods = ("Greedy", "Avg.", "Avg. (V=1)", "M1 MAX", "M1 MAX (V=1)")
