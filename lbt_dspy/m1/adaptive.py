"""Adaptive exams: spend student generations only where they can still change the M1 pick.

A teaching problem (TP) has N TR-TA pairs; the full exam gives every pair E exam slots (the paper:
3 variants x 3 repetitions = 9) per student, i.e. N x E generations. But M1 only needs the *pick*: the
answer group with the largest MAX (or SUM) of LbT scores. `AdaptiveExam` races the answer groups:

1. every pair of a TP with two or more answer groups gets `initial` slots (a TP whose pairs all agree
   needs no exam: its pick is already known);
2. each round, the full-exam score of each pair is bounded from what it has shown so far — by the
   slots still to come (worst case), or, with ``confidence < 1``, by a beta-binomial predictive
   interval (a Beta prior centred on the TP's pooled pass rate, `prior_strength` pseudo-slots);
3. the current pick (what `lbt select` would report now, from the mean over the slots taken) is
   *decided* for a method when its group surely beats every other group — its lower bound above their
   upper bounds (ties broken as `select` does: the larger group, then the earlier one);
4. only pairs that can still change an undecided pick get `step` more slots: for SUM every pair of the
   leading and still-contending groups, for MAX those whose upper bound reaches the leader's lower bound.

With ``confidence = 1`` the bounds are worst-case and the pick is provably the full exam's (fewer
savings); lower confidence trades agreement for generations (see ``eval/bench_adaptive.py``).
Slots are taken in exam order, so the first slots cover the distinct exam problems (the paper's
``[v1, v2, v3, v1, ...]``). The scheduler is stateless: it reads what has been recorded, so a run
that stops anywhere resumes to the same decisions.

Pure logic (numpy only): `next_slots` maps recorded results to the slots to run next; `replay`
drives it over saved full-exam results (``eval/synthetic_exams.py`` makes such results with known truth).
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .select import METHODS, Pair

RACED_METHODS = ("M1 MAX", "M1 SUM")


@dataclass
class AdaptiveExam:
    """The racing exam scheduler of one run.

    Args:
        num_slots: Exam slots of the full exam per pair (per student), e.g. 9.
        initial: Slots every pair of a contested TP takes in the first round.
        step: Slots added per round to each pair still in the race.
        confidence: 1.0: worst-case bounds, the pick is always the full exam's. Lower (e.g. 0.9): each
            bound is a one-sided predictive interval holding with this probability; fewer generations.
        prior_strength: Pseudo-slots of the Beta prior (centred on the TP's pooled pass rate).
        methods: Picks to decide: ``"M1 MAX"`` and/or ``"M1 SUM"``.
        units_per_slot: Generations per slot (the number of students); a slot's result is their mean.
        max_width: M1 MAX only: per answer group, at most this many pairs (the most promising that can
            still reach the leader) race in a round; 0: all of them.

    Example:
        >>> sched = AdaptiveExam(num_slots=3, initial=1, confidence=1.0)
        >>> sched.next_slots(groups=[0, 0, 1], results=[[None] * 3] * 3)  # first round: one slot each
        {0: [0], 1: [0], 2: [0]}
        >>> sched.next_slots(groups=[0, 0, 1], results=[[1, None, None], [1, None, None], [0, 0, 0]])
        {}
    """

    num_slots: int
    initial: int = 1
    step: int = 1
    confidence: float = 1.0
    prior_strength: float = 2.0
    methods: Sequence[str] = RACED_METHODS
    units_per_slot: int = 1
    max_width: int = 2

    def __post_init__(self):
        if self.num_slots < 1:
            raise ValueError("num_slots must be >= 1")
        if not 1 <= self.initial <= self.num_slots:
            raise ValueError(f"initial must be in 1..num_slots ({self.num_slots}), got {self.initial}")
        if self.step < 1:
            raise ValueError("step must be >= 1")
        if not 0.0 < self.confidence <= 1.0:
            raise ValueError(f"confidence must be in (0, 1], got {self.confidence}")
        if self.prior_strength <= 0:
            raise ValueError("prior_strength must be > 0")
        bad = [m for m in self.methods if m not in RACED_METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {RACED_METHODS}, got {list(self.methods)}")

    # --- the decision ----------------------------------------------------------------------------
    def next_slots(self, groups: Sequence[int | None], results: Sequence[Sequence[float | None]]) -> dict[int, list[int]]:
        """The slots each pair takes next (pair index -> slot indexes); ``{}`` when the TP is done.

        Args:
            groups: Per pair, its answer group (equivalent answers share an id); None: no answer.
            results: Per pair, per slot: the score (mean over students, in [0, 1]) or None if not taken.
        """
        if len(groups) != len(results):
            raise ValueError("groups and results must have one entry per pair")
        pairs = [i for i, g in enumerate(groups) if g is not None]
        if len({groups[i] for i in pairs}) < 2:  # one answer (or none): the pick is known, no exam
            return {}
        first = {i: self._missing(results[i], self.initial - self._taken(results[i])) for i in pairs}
        first = {i: s for i, s in first.items() if s}
        if first:
            return first
        u = self.units_per_slot
        obs = {}  # pair -> (successes, generations taken, generations to come)
        for i in pairs:
            vals = [float(v) for v in results[i] if v is not None]
            obs[i] = (sum(vals) * u, len(vals) * u, (self.num_slots - len(vals)) * u)
        members: dict[int, list[int]] = {}
        for i in pairs:
            members.setdefault(groups[i], []).append(i)
        pred = self._predict(obs)
        relevant: set[int] = set()
        for method in self.methods:
            leader = pick(method, groups, results)
            bounds = {g: self._group_bounds(method, [obs[i] for i in m], pred) for g, m in members.items()}
            lo_l = bounds[leader][0]
            contending = [g for g in members if g != leader and not _beats(lo_l, _tiebreak(members[leader]),
                                                                           bounds[g][1], _tiebreak(members[g]))]
            for g in ([leader] + contending) if contending else []:
                racing = [i for i in members[g] if obs[i][2] > 0]
                if method == "M1 MAX":
                    # Only a pair that can reach the leader's lower bound matters; of those, the most
                    # promising `max_width` per group race this round (LUCB-style).
                    racing = [i for i in racing if pred[obs[i]].hi >= lo_l] or racing
                    if self.max_width:
                        racing = sorted(racing, key=lambda i: -pred[obs[i]].mean)[:self.max_width]
                relevant.update(racing)
        todo = {i: self._missing(results[i], self.step) for i in sorted(relevant)}
        return {i: t for i, t in todo.items() if t}

    # --- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _taken(row) -> int:
        return sum(v is not None for v in row)

    @staticmethod
    def _missing(row, k: int) -> list[int]:
        return [s for s, v in enumerate(row) if v is None][:max(0, k)]

    def _predict(self, obs: dict) -> dict:
        """Per distinct (successes, taken, to come): the predictive law of the pair's full-exam successes."""
        alpha = 1.0 - self.confidence
        total_s = sum(o[0] for o in obs.values())
        total_n = sum(o[1] for o in obs.values())
        rate = min(0.98, max(0.02, total_s / total_n if total_n else 0.5))
        a0, b0 = self.prior_strength * rate, self.prior_strength * (1 - rate)
        out = {}
        for key in set(obs.values()):
            s, n, m = key
            if alpha <= 0:  # worst case: every generation still to come fails / passes
                out[key] = _Pred(None, None, s, s + m, s / n * (n + m) if n else 0.0)
                continue
            pmf = _beta_binomial(m, a0 + s, b0 + n - s)
            cdf = np.cumsum(pmf)
            out[key] = _Pred(pmf, cdf, s + _quantile_lo(cdf, alpha), s + _quantile_hi(cdf, alpha),
                             s + float(np.dot(np.arange(len(pmf)), pmf)))
        return out

    def _group_bounds(self, method: str, keys: list, pred: dict) -> tuple[float, float]:
        """Bounds on a group's full-exam MAX or SUM (in successes: every pair has the same generations)."""
        alpha = 1.0 - self.confidence
        if method == "M1 SUM":
            base = sum(k[0] for k in keys)
            if alpha <= 0:
                return base, base + sum(k[2] for k in keys)
            counts = Counter(k for k in keys if k[2] > 0)
            if not counts:
                return base, base
            size = int(round(sum(k[2] for k in keys))) + 1
            nfft = 1 << (size - 1).bit_length()
            spec = np.ones(nfft // 2 + 1, dtype=complex)
            for k, c in counts.items():  # the sum's law: product of the members' characteristic functions
                spec *= np.fft.rfft(pred[k].pmf, nfft) ** c
            pmf = np.clip(np.fft.irfft(spec, nfft)[:size], 0.0, None)
            cdf = np.cumsum(pmf / pmf.sum())
            return base + _quantile_lo(cdf, alpha), base + _quantile_hi(cdf, alpha)
        # MAX. Lower bound: the best member's own lower bound (valid whatever the dependence between
        # pairs; pairs share exam problems, so their results are positively correlated). Upper bound:
        # P(max <= x) = prod_i P(s_i + R_i <= x), independence being the cautious side for a maximum.
        lo = max(pred[k].lo for k in keys)
        if alpha <= 0:
            return lo, max(pred[k].hi for k in keys)
        counts = Counter(keys)
        grid = np.unique(np.concatenate([k[0] + np.arange(len(pred[k].pmf)) for k in counts]))
        cdf_max = np.ones(len(grid))
        for k, c in counts.items():
            cdf_k = np.concatenate([[0.0], pred[k].cdf])
            idx = np.clip(np.floor(grid - k[0] + 1e-9).astype(int) + 1, 0, len(pred[k].pmf))
            cdf_max *= cdf_k[idx] ** c
        hi = grid[min(np.searchsorted(cdf_max, 1 - alpha - 1e-12, side="left"), len(grid) - 1)]
        return float(lo), float(hi)


@dataclass
class _Pred:
    pmf: np.ndarray | None   # law of the successes to come (None: worst-case bounds)
    cdf: np.ndarray | None
    lo: float                # bounds and mean of the full-exam successes
    hi: float
    mean: float


def _beta_binomial(m: int, a: float, b: float) -> np.ndarray:
    m = int(round(m))
    if m <= 0:
        return np.ones(1)
    lg = math.lgamma
    logp = np.array([lg(m + 1) - lg(r + 1) - lg(m - r + 1) + lg(r + a) + lg(m - r + b) for r in range(m + 1)])
    p = np.exp(logp - logp.max())
    return p / p.sum()


def _quantile_lo(cdf: np.ndarray, alpha: float) -> float:
    """Smallest value v with P(V <= v) > alpha (so P(V < v) <= alpha)."""
    return float(min(np.searchsorted(cdf, alpha, side="right"), len(cdf) - 1))


def _quantile_hi(cdf: np.ndarray, alpha: float) -> float:
    """Smallest value v with P(V <= v) >= 1 - alpha (so P(V > v) <= alpha)."""
    return float(min(np.searchsorted(cdf, 1 - alpha - 1e-12, side="left"), len(cdf) - 1))


def _tiebreak(idx: list[int]) -> tuple:
    return (len(idx), -min(idx))


def _beats(lo_a, tie_a, hi_b, tie_b) -> bool:
    """Group a surely wins over b: its lower bound above b's upper bound, or equal and a wins the tie."""
    return lo_a > hi_b + 1e-9 or (abs(lo_a - hi_b) <= 1e-9 and tie_a > tie_b)


def exam_scheduler(cfg: dict | None, num_slots: int, units_per_slot: int = 1) -> AdaptiveExam:
    """The scheduler of a config's ``exam_budget_cfg`` (keys: initial, step, confidence, prior_strength,
    max_width, methods); defaults: one slot first, one more per round, confidence 0.95."""
    cfg = dict(cfg or {})
    known = {"initial", "step", "confidence", "prior_strength", "max_width", "methods"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown}; expected some of {sorted(known)}")
    cfg.setdefault("confidence", 0.95)
    if "methods" in cfg:
        cfg["methods"] = tuple([cfg["methods"]] if isinstance(cfg["methods"], str) else cfg["methods"])
    cfg["initial"] = min(int(cfg.get("initial", 1)), num_slots)
    return AdaptiveExam(num_slots=num_slots, units_per_slot=units_per_slot, **cfg)


# --- replay over saved full-exam results --------------------------------------------------------------
def replay(groups: Sequence[int | None], full: Sequence[Sequence[float]], sched: AdaptiveExam) -> list[list[float | None]]:
    """Run the scheduler against a saved full exam: the results it would have recorded."""
    obs = [[None] * len(row) for row in full]
    while True:
        todo = sched.next_slots(groups, obs)
        if not todo:
            return obs
        for i, slots in todo.items():
            for s in slots:
                obs[i][s] = full[i][s]


def pick(method: str, groups: Sequence[int | None], results: Sequence[Sequence[float | None]]) -> int | None:
    """The group `select` picks from the mean over the slots taken (what `lbt select` would report)."""
    cands = []
    for i, g in enumerate(groups):
        vals = [v for v in results[i] if v is not None]
        cands.append(Pair("" if g is None else f"g{g}", sum(vals) / len(vals) if vals else 0.0, i))
    best = METHODS[method](cands, lambda a, b: a == b)
    return None if best is None else groups[best.index]
