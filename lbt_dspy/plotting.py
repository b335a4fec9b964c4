"""The one matplotlib set-up of lbt's reports: headless backend, figure creation and saving, error bars.

Reports import pyplot only through here, so the Agg backend is chosen before anything else touches
matplotlib (a report must draw on a server without a display) and every PNG is saved the same way.

Example:
    >>> from lbt_dspy.plotting import figure, save, bars_with_intervals
    >>> from lbt_dspy.stats import bootstrap_mean
    >>> fig, ax = figure(5, 3)
    >>> _ = bars_with_intervals(ax, ["a", "b"], [bootstrap_mean([1, 0, 1]), bootstrap_mean([0, 0, 1])])
    >>> save(fig, "/tmp/lbt_plotting_doctest.png")  # doctest: +ELLIPSIS
    PosixPath('/tmp/lbt_plotting_doctest.png')
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .stats import Interval, error_bar

DPI = 120


def pyplot():
    """matplotlib.pyplot on the Agg (file-only) backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def figure(width: float = 6.0, height: float = 4.0):
    """A new (figure, axes) pair of the given size in inches."""
    return pyplot().subplots(figsize=(width, height))


def save(fig, path: str | Path, dpi: int = DPI) -> Path:
    """Lay out, save as PNG and close `fig` (closing frees it: reports draw many figures)."""
    path = Path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    pyplot().close(fig)
    return path


def yerr(intervals: Sequence[Interval], scale: float = 100.0) -> list[list[float]]:
    """The 2 x N `yerr` matplotlib wants for bars/points at the intervals' estimates."""
    bars = [error_bar(iv, scale) for iv in intervals]
    return [[b[0] for b in bars], [b[1] for b in bars]]


def bars_with_intervals(ax, labels: Sequence[str], intervals: Sequence[Interval], *, scale: float = 100.0,
                        offset: float = 0.0, width: float = 0.8, label: str | None = None, color=None,
                        annotate: bool = True):
    """Bars at the intervals' estimates with their interval as error bars (x positions 0..N-1 + offset).

    Args:
        ax: the axes to draw on.
        labels: one x tick label per bar (set only when offset == 0).
        intervals: `stats.Interval`s, one per bar.
        scale: multiply values (100: percent).
        offset, width: for grouped bars.
        label, color: passed to `ax.bar`.
        annotate: write each estimate above its bar.
    """
    xs = [i + offset for i in range(len(intervals))]
    heights = [scale * iv.estimate if iv.n else 0.0 for iv in intervals]
    bars = ax.bar(xs, heights, width, yerr=yerr(intervals, scale), capsize=4, label=label, color=color,
                  error_kw={"elinewidth": 1})
    if annotate:
        for x, iv in zip(xs, intervals):
            if iv.n:
                ax.annotate(f"{scale * iv.estimate:.3g}", (x, scale * iv.estimate), ha="left", va="bottom", fontsize=7,
                            xytext=(3, 1), textcoords="offset points")
    if offset == 0.0:
        ax.set_xticks(range(len(intervals)), list(labels))
    return bars


def line_with_band(ax, xs: Sequence[float], mean: Sequence[float], low: Sequence[float], high: Sequence[float],
                   *, label: str | None = None, color=None, marker: str = "o"):
    """A line through `mean` with a shaded band from `low` to `high` (same units as given). An unbounded
    side (inf, e.g. a ratio over a zero reference) is drawn to just beyond the finite values."""
    import math

    finite = [v for v in list(mean) + list(low) + list(high) if v is not None and math.isfinite(v)]
    top, bottom = (max(finite, default=1.0), min(finite, default=0.0))
    pad = 0.15 * (top - bottom or 1.0)
    high = [top + pad if v == math.inf else v for v in high]
    low = [bottom - pad if v == -math.inf else v for v in low]
    (line,) = ax.plot(xs, mean, marker=marker, label=label, color=color)
    ax.fill_between(xs, low, high, alpha=0.2, color=line.get_color(), linewidth=0)
    return line
