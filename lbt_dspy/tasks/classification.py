"""Text classification (the paper's M3): the LbT teleprompter optimises a classifier's in-context examples."""

from __future__ import annotations

from .base import Task


class ClassificationTask(Task):
    """Classification (liar, fallacy, your JSONL of label/text rows), run by `lbt m3`: data from
    `lbt_dspy.m3.tasks.load_task`, scored by F1, examples chosen by `LbTOptimizer`; the report shows F1 per
    round for LbT and the baselines.

    Example:
        >>> ClassificationTask().command
        'm3'
    """

    name = "classification"
    defaults: dict = {}  # M3Config names its data set with its own key (task: liar | fallacy | jsonl)
    vote = False
    methods = ("zero_shot", "random", "self", "LbT")
    command = "m3"
