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


def _best_group(groups: list[list[int]], weight: Callable[[list[int]], float]) -> list[int] | None:
    # Ties go to the larger group, then to the earlier one.
    return max(groups, key=lambda g: (weight(g), len(g), -g[0])) if groups else None


def self_consistency(cands: Sequence[Candidate], equivalent: Equiv) -> Candidate | None:
    """SC: the majority answer among the candidates."""
    best = _best_group(group_answers([c.answer for c in cands], equivalent), len)
    return cands[best[0]] if best else None


def m1_sum(cands: Sequence[Candidate], equivalent: Equiv) -> Candidate | None:
    """M1 (SUM): the answer whose candidates have the largest total LbT score."""
    best = _best_group(group_answers([c.answer for c in cands], equivalent),
                       lambda g: sum(cands[i].lbt_score for i in g))
    return cands[best[0]] if best else None


def m1_max(cands: Sequence[Candidate], equivalent: Equiv) -> Candidate | None:
    """M1 (MAX): the candidate with the highest LbT score (ties: the answer with more candidates)."""
    best = _best_group(group_answers([c.answer for c in cands], equivalent),
                       lambda g: max(cands[i].lbt_score for i in g))
    return cands[max(best, key=lambda i: (cands[i].lbt_score, -i))] if best else None


METHODS = {"SC": self_consistency, "M1 MAX": m1_max, "M1 SUM": m1_sum}
