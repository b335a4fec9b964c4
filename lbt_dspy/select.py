"""M1 selection: pick one teacher answer per problem, by vote or by LbT score.

Every function takes the TR-TA candidates of one problem and an equivalence test, and returns the
chosen candidate (the first of the winning answer's group; for MAX, its best-scored member), or None. Answers are grouped by *equivalence* (e.g. math-verify), not string equality.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

Equiv = Callable[[str, str], bool]


@dataclass
class Candidate:
    """One TR-TA pair of a problem: its answer and LbT score (mean exam accuracy of the students)."""

    answer: str
    lbt_score: float = 0.0
    index: int = 0


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


def _pick(groups: list[list[int]], weight: Callable[[list[int]], float],
          cands: Sequence[Candidate]) -> Candidate | None:
    if not groups:
        return None
    # Ties go to the larger group, then to the earlier one.
    best = max(groups, key=lambda g: (weight(g), len(g), -g[0]))
    return cands[best[0]]


def self_consistency(cands: Sequence[Candidate], equivalent: Equiv) -> str | None:
    """SC: the majority answer among the candidates."""
    groups = group_answers([c.answer for c in cands], equivalent)
    return _pick(groups, len, cands)


def m1_sum(cands: Sequence[Candidate], equivalent: Equiv) -> str | None:
    """M1 (SUM): the answer whose candidates have the largest total LbT score."""
    groups = group_answers([c.answer for c in cands], equivalent)
    return _pick(groups, lambda g: sum(cands[i].lbt_score for i in g), cands)


def m1_max(cands: Sequence[Candidate], equivalent: Equiv) -> str | None:
    """M1 (MAX): the answer of the candidate with the highest LbT score (ties: the larger group)."""
    groups = group_answers([c.answer for c in cands], equivalent)
    best = _pick(groups, lambda g: max(cands[i].lbt_score for i in g), cands)
    if best is None:
        return None
    group = next(g for g in groups if cands[g[0]] is best)
    return cands[max(group, key=lambda i: (cands[i].lbt_score, -i))]


METHODS = {"SC": self_consistency, "M1 MAX": m1_max, "M1 SUM": m1_sum}
