"""`teaching_plans`, as in the seed: which teaching items are shown in each exam."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import LbtError


@dataclass
class TeachingPlan:
    """One exam: the indexes of its teaching items, and whether they are shown (not question-only)."""

    indexes: list[int]
    show_demos: bool = True


def resolve_teaching_plans(plans, num_items: int) -> list[TeachingPlan]:
    """Expand a seed `teaching_plans` value.

    ``"every"`` (default): one exam per teaching item; ``"no demo"``: a single exam with no teaching
    item; a list of index lists: one exam per list. A list may start with ``"question-only"``: its items
    choose the exam problems but are not shown to the student.

    Example:
        >>> [p.indexes for p in resolve_teaching_plans("every", 3)]
        [[0], [1], [2]]
        >>> resolve_teaching_plans([["question-only", 1]], 2)
        [TeachingPlan(indexes=[1], show_demos=False)]
    """
    if plans is None or plans == "every":
        return [TeachingPlan([i]) for i in range(num_items)]
    if plans == "no demo":
        return [TeachingPlan([], show_demos=False)]
    if isinstance(plans, str):
        raise LbtError(f"teaching_plans: unknown value {plans!r} (use 'every', 'no demo' or a list of index lists)")
    if not isinstance(plans, list):
        raise LbtError(f"teaching_plans: expected a list of index lists, got {type(plans).__name__}")
    out = []
    for n, plan in enumerate(plans):
        if not isinstance(plan, list):
            raise LbtError(f"teaching_plans[{n}]: expected a list of indexes, got {plan!r}")
        show = True
        if plan and plan[0] == "question-only":
            show, plan = False, plan[1:]
        for idx in plan:
            if not isinstance(idx, int) or isinstance(idx, bool):
                raise LbtError(f"teaching_plans[{n}]: {idx!r} is not an index")
            if not 0 <= idx < num_items:
                raise LbtError(f"teaching_plans[{n}]: index {idx} out of range (teaching dataset has {num_items} items)")
        out.append(TeachingPlan(list(plan), show))
    return out
