"""M1 selection: pick one teacher answer per problem, by vote or by LbT score.

Every function takes the TR-TA pairs of one problem and an equivalence test, and returns the chosen
pair (the first of the winning answer's group; for MAX, its best-scored member), or None. Answers are
grouped by *equivalence* (e.g. math-verify), not string equality. The same rules serve math and code:
code is not voted (``equivalent=None``: every pair is its own group) and breaks M1 MAX ties by the
V-score (``tie_break``), so the `M1` module, `lbt select` and the report pick alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from ..renamed import renamed

Equiv = Callable[[str, str], bool]


@dataclass
class Pair:
    """One TR-TA pair of a problem, as selection sees it.

    Args:
        answer: The teacher's answer (TA); empty when unparseable (it then votes for nothing).
        lbt_score: The pair's LbT score (students' mean exam accuracy); None: not examined, which ranks as 0.
        index: The pair's index among the problem's pairs.
        rationale: The teacher's rationale (TR).
        per_student: LbT score per student.
        exam: Per student, the exam it took: ``{"questions", "answers", "scores"}``.
        v_score: Code only: the share of the problem's visible tests the answer passes (M1 MAX tie-break).

    Example:
        >>> m1_max([Pair("4", 0.5, 0), Pair("5", 1.0, 1)], lambda a, b: a == b).answer
        '5'
    """

    answer: str
    lbt_score: float | None = 0.0
    index: int = 0
    rationale: str = ""
    per_student: dict = field(default_factory=dict)
    exam: dict = field(default_factory=dict)
    v_score: float | None = None

    def get(self, key: str, default: Any = None) -> Any:  # dict-style access, as on a dspy.Prediction
        return getattr(self, key, default)


__getattr__ = renamed(__name__, {"Candidate": ("Pair", lambda: Pair)})  # the earlier name


def _score(p) -> float:
    return p.lbt_score or 0.0  # a pair without exam results ranks as score 0


def group_answers(answers: Sequence[str], equivalent: Equiv) -> list[list[int]]:
    """Indexes of `answers` grouped into equivalence classes (first member is the representative)."""
    groups: list[list[int]] = []
    exact: dict[str, list[int]] = {}
    for i, ans in enumerate(answers):
        if not ans:
            continue  # an unparseable answer votes for nothing
        if ans in exact:  # the same string needs no equivalence check
            exact[ans].append(i)
            continue
        for g in groups:
            if equivalent(answers[g[0]], ans):
                g.append(i)
                exact[ans] = g
                break
        else:
            groups.append([i])
            exact[ans] = groups[-1]
    return groups


def _groups(cands: Sequence[Pair], equivalent: Equiv | None) -> list[list[int]]:
    if equivalent is None:  # not voted (code): every pair stands alone
        return [[i] for i in range(len(cands))]
    return group_answers([c.answer for c in cands], equivalent)


def _best_group(groups: list[list[int]], weight: Callable[[list[int]], float]) -> list[int] | None:
    # Ties go to the larger group, then to the earlier one.
    return max(groups, key=lambda g: (weight(g), len(g), -g[0])) if groups else None


def self_consistency(cands: Sequence[Pair], equivalent: Equiv) -> Pair | None:
    """SC: the majority answer among the pairs."""
    best = _best_group(_groups(cands, equivalent), len)
    return cands[best[0]] if best else None


def m1_sum(cands: Sequence[Pair], equivalent: Equiv) -> Pair | None:
    """M1 (SUM): the answer whose pairs have the largest total LbT score."""
    best = _best_group(_groups(cands, equivalent), lambda g: sum(_score(cands[i]) for i in g))
    return cands[best[0]] if best else None


def m1_max(cands: Sequence[Pair], equivalent: Equiv | None, tie_break: Callable[[Pair], float] | None = None
           ) -> Pair | None:
    """M1 (MAX): the pair with the highest LbT score.

    Ties go to the higher ``tie_break(pair)`` (code: the V-score), then to the answer with more pairs,
    then to the earlier answer group, then to the earlier pair. ``equivalent=None``: answers are not
    grouped (code), so a tie falls through to the earlier pair.
    """
    groups = _groups(cands, equivalent)
    if not groups:
        return None
    size = {i: len(g) for g in groups for i in g}
    first = {i: g[0] for g in groups for i in g}
    tb = tie_break or (lambda p: 0.0)
    best = max(size, key=lambda i: (_score(cands[i]), tb(cands[i]) or 0.0, size[i], -first[i], -i))
    return cands[best]


METHODS = {"SC": self_consistency, "M1 MAX": m1_max, "M1 SUM": m1_sum}
