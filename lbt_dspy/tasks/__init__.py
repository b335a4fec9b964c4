"""Tasks as plug-ins: what kind of problem a run teaches, chosen by the config's ``task`` key.

A task bundles what differs between kinds of problems: its default dataset loader, scorer and exam maker
(config keys it fills when a config names the task and leaves them out), the M1 selection methods that
apply to it (math votes over equivalent answers: SC, M1 MAX, M1 SUM; code is never voted: M1 MAX with a
V-score tie-break), and the rows its report shows. ``task`` absent: inferred from ``exam_scorer_type``.

Example:
    >>> task_for({"exam_scorer_type": "code"}).name, task_for({}).methods
    ('code', ('Greedy', 'SC', 'M1 MAX', 'M1 SUM', 'AVG'))
"""

from __future__ import annotations

from ..registry import Registry
from .base import Task
from .classification import ClassificationTask
from .code import CodeTask
from .math import MathTask

tasks = Registry("task", key="task")
for _cls in (MathTask, CodeTask, ClassificationTask):
    tasks.register(_cls.name)(_cls)

# The scorer a config names decides its task when it names none.
_BY_SCORER = {"code": "code"}


def task_for(section) -> Task:
    """The task of a config (an `M1Config`, an `M3Config` or its mapping): its ``task`` key, else
    inferred from ``exam_scorer_type`` (code -> code, anything else -> math)."""
    get = section.get if isinstance(section, dict) else (lambda k, d=None: getattr(section, k, d))
    name = get("task") or _BY_SCORER.get(get("exam_scorer_type") or "math", "math")
    return tasks.get(name)()


__all__ = ["Task", "MathTask", "CodeTask", "ClassificationTask", "tasks", "task_for"]
