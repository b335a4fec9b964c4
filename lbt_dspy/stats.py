"""Uncertainty of per-problem scores: seeded percentile bootstrap over problems, paired differences.

Every accuracy lbt reports is a mean over problems of a per-problem score (0/1 correctness, or a
fraction such as an S-score). Its 95% interval here is the percentile bootstrap over problems: draw the
problems with replacement, take the mean, repeat, read the 2.5% and 97.5% quantiles. A comparison of two
methods on the same problems is bootstrapped *paired* (the same resampled problems for both), which is
far tighter than comparing two separate intervals, and comes with the count of problems each method wins.
Everything is seeded, so a report is reproducible.

Example:
    >>> from lbt_dspy.stats import bootstrap_mean, paired_difference
    >>> iv = bootstrap_mean([1, 0, 1, 1, 0, 1, 0, 1])
    >>> iv.estimate, iv.low <= iv.estimate <= iv.high
    (0.625, True)
    >>> d = paired_difference([1, 1, 0, 1], [0, 1, 0, 1])
    >>> d.estimate, d.wins, d.losses, d.ties
    (0.25, 1, 0, 3)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 2000
SEED = 0


@dataclass(frozen=True)
class Interval:
    """A mean over `n` problems with its bootstrap interval (nan everywhere when n == 0).

    Args:
        estimate: the mean of the per-problem values.
        low, high: the interval's bounds (percentile bootstrap).
        n: number of problems.
        confidence: the interval's nominal coverage.
    """

    estimate: float
    low: float
    high: float
    n: int
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict:
        """JSON-ready: nan (no data) as None, an unbounded side (inf) as the string "inf" / "-inf"."""
        def conv(v):
            if isinstance(v, float) and math.isnan(v):
                return None
            if isinstance(v, float) and math.isinf(v):
                return "inf" if v > 0 else "-inf"
            return v
        return {k: conv(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> "Interval":
        """The inverse of `to_dict`."""
        return cls(**{k: (math.nan if v is None else float(v) if isinstance(v, str) else v) for k, v in d.items()})

    def text(self, scale: float = 100.0, digits: int = 1, unit: str = "%") -> str:
        """'62.5% [25.0, 87.5]' (scale 100) or '0.625 [0.250, 0.875]' (scale 1, unit '')."""
        if self.n == 0:
            return "-"
        f = f"{{:.{digits}f}}"
        return f"{f.format(scale * self.estimate)}{unit} [{f.format(scale * self.low)}, {f.format(scale * self.high)}]"


@dataclass(frozen=True)
class Difference(Interval):
    """Mean of a - b over `n` paired problems, its paired bootstrap interval, and per-problem wins.

    Args:
        wins: problems where a scores higher than b; losses: lower; ties: equal.
    """

    wins: int = 0
    losses: int = 0
    ties: int = 0

    def excludes_zero(self) -> bool:
        """True when the interval lies strictly on one side of 0 (the difference is resolved)."""
        return self.n > 0 and (self.low > 0 or self.high < 0)

    def text(self, scale: float = 100.0, digits: int = 1, unit: str = " pts") -> str:
        """'+12.5 pts [-6.2, +31.2]' (scale 100) — signed, with the interval."""
        if self.n == 0:
            return "-"
        f = f"{{:+.{digits}f}}"
        return f"{f.format(scale * self.estimate)}{unit} [{f.format(scale * self.low)}, {f.format(scale * self.high)}]"

    def wins_text(self) -> str:
        return f"{self.wins} / {self.losses} / {self.ties}"


def _values(x) -> np.ndarray:
    arr = np.asarray(list(x), dtype=float)
    if arr.ndim != 1:
        raise ValueError("expected one score per problem")
    return arr


def _quantiles(means: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1.0 - confidence) / 2
    # with infinite values (an unbounded ratio) interpolation gives nan; take order statistics instead
    method = "linear" if np.isfinite(means).all() else "inverted_cdf"
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha], method=method)
    return float(lo), float(hi)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """`resamples` x `n` problem indices drawn with replacement (PCG64, so stable across numpy versions)."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def bootstrap_mean(values: Sequence[float], *, confidence: float = CONFIDENCE, resamples: int = RESAMPLES,
                   seed: int = SEED) -> Interval:
    """The mean of per-problem `values` with its percentile-bootstrap interval over problems.

    Args:
        values: one score per problem (0/1 correctness or a fraction).
        confidence: nominal coverage (0.95).
        resamples: bootstrap draws.
        seed: the draws' seed; equal inputs and seed give the same interval.
    """
    v = _values(values)
    if v.size == 0:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    means = v[resample_indices(v.size, resamples, seed)].mean(axis=1)
    lo, hi = _quantiles(means, confidence)
    est = float(v.mean())
    # The percentile interval of a mean always brackets it up to float rounding; clamp that rounding.
    return Interval(est, min(lo, est), max(hi, est), int(v.size), confidence)


def wins_losses(a: Sequence[float], b: Sequence[float]) -> tuple[int, int, int]:
    """(wins, losses, ties) of a over b, problem by problem."""
    a, b = _values(a), _values(b)
    if a.shape != b.shape:
        raise ValueError(f"paired scores need equal lengths ({a.size} vs {b.size})")
    return int((a > b).sum()), int((a < b).sum()), int((a == b).sum())


def align(a: Mapping, b: Mapping) -> tuple[list, list, list]:
    """Two {problem: score} mappings restricted to the problems both have (sorted keys), for pairing."""
    keys = sorted(k for k in a if k in b)
    return keys, [a[k] for k in keys], [b[k] for k in keys]


def paired_difference(a: Sequence[float] | Mapping, b: Sequence[float] | Mapping, *,
                      confidence: float = CONFIDENCE, resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """Mean of a - b over the same problems with its paired bootstrap interval and wins/losses/ties.

    Args:
        a, b: one score per problem for two methods, in the same problem order (or two mappings keyed
            by problem: only problems both have are paired).
        confidence, resamples, seed: as in `bootstrap_mean`.
    """
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        _, a, b = align(a, b)
    av, bv = _values(a), _values(b)
    w, l, t = wins_losses(av, bv)
    d = av - bv
    if d.size == 0:
        return Difference(math.nan, math.nan, math.nan, 0, confidence, 0, 0, 0)
    est = float(d.mean())
    if not d.any():  # identical methods: exactly 0, no resampling noise
        return Difference(0.0, 0.0, 0.0, int(d.size), confidence, w, l, t)
    means = d[resample_indices(d.size, resamples, seed)].mean(axis=1)
    lo, hi = _quantiles(means, confidence)
    return Difference(est, min(lo, est), max(hi, est), int(d.size), confidence, w, l, t)


def error_bar(iv: Interval, scale: float = 100.0) -> tuple[float, float]:
    """(below, above) distances from the estimate to the bounds, scaled: matplotlib's yerr format."""
    if iv.n == 0:
        return (0.0, 0.0)
    return (scale * (iv.estimate - iv.low), scale * (iv.high - iv.estimate))


def relative_improvement(a: Sequence[float], b: Sequence[float], *, confidence: float = CONFIDENCE,
                         resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """mean(a) / mean(b) - 1 over the same problems, with its paired bootstrap interval (the paper's
    "relative improvement over SC", Fig. 4). nan when mean(b) is 0. A resample where the reference's mean is
    0 counts as +inf when a's is positive (so an upper bound may be inf: the data cannot bound it) and as 0
    when both are 0.

    Args:
        a, b: one score per problem for the method and the reference, in the same order.
        confidence, resamples, seed: as in `bootstrap_mean`.
    """
    av, bv = _values(a), _values(b)
    if av.shape != bv.shape:
        raise ValueError(f"paired scores need equal lengths ({av.size} vs {bv.size})")
    if av.size == 0 or bv.mean() == 0:
        return Interval(math.nan, math.nan, math.nan, int(av.size), confidence)
    est = float(av.mean() / bv.mean() - 1.0)
    if np.array_equal(av, bv):
        return Interval(0.0, 0.0, 0.0, int(av.size), confidence)
    idx = resample_indices(av.size, resamples, seed)
    num, den = av[idx].mean(axis=1), bv[idx].mean(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(den > 0, num / np.where(den > 0, den, 1.0) - 1.0, np.where(num > 0, np.inf, 0.0))
    lo, hi = _quantiles(rel, confidence)
    return Interval(est, min(lo, est), max(hi, est), int(av.size), confidence)


def bootstrap_metric(metric, labels: Sequence, preds: Sequence, *, confidence: float = CONFIDENCE,
                     resamples: int = RESAMPLES, seed: int = SEED) -> Interval:
    """A corpus-level metric (e.g. binary F1, not a mean of per-item scores) with its percentile-bootstrap
    interval over items: `metric(labels, preds)` recomputed on resampled items.

    Args:
        metric: function of (labels, preds) lists -> float.
        labels, preds: aligned, one per test item.
        confidence, resamples, seed: as in `bootstrap_mean`.
    """
    labels, preds = list(labels), list(preds)
    if len(labels) != len(preds):
        raise ValueError(f"labels and preds need equal lengths ({len(labels)} vs {len(preds)})")
    if not labels:
        return Interval(math.nan, math.nan, math.nan, 0, confidence)
    est = float(metric(labels, preds))
    vals = np.array([metric([labels[i] for i in row], [preds[i] for i in row])
                     for row in resample_indices(len(labels), resamples, seed)])
    lo, hi = _quantiles(vals, confidence)
    return Interval(est, min(lo, est), max(hi, est), len(labels), confidence)


def paired_metric_difference(metric, labels: Sequence, a: Sequence, b: Sequence, *, confidence: float = CONFIDENCE,
                             resamples: int = RESAMPLES, seed: int = SEED) -> Difference:
    """metric(labels, a) - metric(labels, b) with its paired bootstrap interval over items (the same resampled
    items for both); wins / losses / ties count items where only a / only b / both or neither equal the label."""
    labels, a, b = list(labels), list(a), list(b)
    if not len(labels) == len(a) == len(b):
        raise ValueError("labels and both predictions need equal lengths")
    w, l, t = wins_losses([float(p == y) for p, y in zip(a, labels)], [float(p == y) for p, y in zip(b, labels)])
    if not labels:
        return Difference(math.nan, math.nan, math.nan, 0, confidence, 0, 0, 0)
    est = float(metric(labels, a) - metric(labels, b))
    if a == b:
        return Difference(0.0, 0.0, 0.0, len(labels), confidence, w, l, t)
    vals = []
    for row in resample_indices(len(labels), resamples, seed):
        ys = [labels[i] for i in row]
        vals.append(metric(ys, [a[i] for i in row]) - metric(ys, [b[i] for i in row]))
    lo, hi = _quantiles(np.array(vals), confidence)
    return Difference(est, min(lo, est), max(hi, est), len(labels), confidence, w, l, t)
