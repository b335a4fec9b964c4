"""lbt_dspy.stats: the bootstrap over problems on hand-made score tables; lbt_dspy.plotting draws them."""

import math
import random

import pytest

from lbt_dspy.plotting import bars_with_intervals, figure, line_with_band, save, yerr
from lbt_dspy.stats import bootstrap_mean, paired_difference, wins_losses


def scores(n, p, seed):
    rng = random.Random(seed)
    return [1.0 if rng.random() < p else 0.0 for _ in range(n)]


@pytest.mark.parametrize("table", [
    [1, 0, 1, 1, 0, 1, 0, 1],
    [0, 0, 0, 1],
    [0.25, 0.5, 1.0, 0.0, 0.75],  # fractional per-problem scores (S-scores, AVG)
    scores(50, 0.3, 1),
])
def test_interval_contains_the_point_estimate(table):
    iv = bootstrap_mean(table)
    assert iv.estimate == pytest.approx(sum(table) / len(table))
    assert iv.low <= iv.estimate <= iv.high
    assert 0.0 <= iv.low and iv.high <= 1.0
    assert iv.n == len(table)
    assert iv.low < iv.high  # non-degenerate tables give a real interval


def test_constant_table_has_a_zero_width_interval():
    iv = bootstrap_mean([1, 1, 1, 1])
    assert (iv.low, iv.estimate, iv.high) == (1.0, 1.0, 1.0)


def test_width_shrinks_with_more_problems():
    # The same accuracy (30%) on 20, 80, 320, 1280 problems: the interval narrows like 1/sqrt(n).
    widths = []
    for n in (20, 80, 320, 1280):
        table = [1.0] * (3 * n // 10) + [0.0] * (n - 3 * n // 10)
        iv = bootstrap_mean(table)
        widths.append(iv.high - iv.low)
    assert all(a > b for a, b in zip(widths, widths[1:])), widths
    # Quadrupling n about halves the width (binomial: 2 * 1.96 * sqrt(.21 / n)).
    for n, w in zip((20, 80, 320, 1280), widths):
        assert w == pytest.approx(2 * 1.96 * math.sqrt(0.21 / n), rel=0.25)


def test_paired_difference_of_identical_methods_is_exactly_zero():
    table = scores(40, 0.5, 2)
    d = paired_difference(table, list(table))
    assert (d.estimate, d.low, d.high) == (0.0, 0.0, 0.0)
    assert (d.wins, d.losses, d.ties) == (0, 0, 40)
    assert not d.excludes_zero()


def test_paired_difference_counts_wins_and_is_tighter_than_unpaired():
    # b equals a except on 6 problems where a is right and b wrong: a clear, resolved gain.
    a = scores(60, 0.5, 3)
    b = list(a)
    flipped = [i for i, x in enumerate(a) if x == 1.0][:6]
    for i in flipped:
        b[i] = 0.0
    d = paired_difference(a, b)
    assert d.estimate == pytest.approx(6 / 60)
    assert (d.wins, d.losses, d.ties) == (6, 0, 54)
    assert d.low > 0 and d.excludes_zero()
    # The two separate intervals overlap although the paired one excludes 0.
    ia, ib = bootstrap_mean(a), bootstrap_mean(b)
    assert ia.low < ib.high
    assert wins_losses(b, a) == (0, 6, 54)


def test_paired_difference_with_mappings_pairs_common_problems_only():
    a = {"p1": 1, "p2": 0, "p3": 1}
    b = {"p2": 1, "p3": 1, "p4": 0}
    d = paired_difference(a, b)
    assert d.n == 2 and d.estimate == pytest.approx(-0.5) and (d.wins, d.losses, d.ties) == (0, 1, 1)


def test_seeded_reproducibility():
    table = scores(30, 0.4, 4)
    other = scores(30, 0.5, 5)
    assert bootstrap_mean(table) == bootstrap_mean(list(table))
    assert bootstrap_mean(table, seed=7) == bootstrap_mean(table, seed=7)
    assert paired_difference(table, other, seed=3) == paired_difference(table, other, seed=3)
    # another seed gives other draws (the bounds move, the estimate does not)
    ivs = {(bootstrap_mean(table, seed=s).low, bootstrap_mean(table, seed=s).high) for s in range(5)}
    assert len(ivs) > 1
    assert {bootstrap_mean(table, seed=s).estimate for s in range(5)} == {bootstrap_mean(table).estimate}


def test_empty_tables_and_mismatched_pairs():
    iv = bootstrap_mean([])
    assert iv.n == 0 and math.isnan(iv.estimate) and iv.text() == "-"
    assert iv.to_dict()["estimate"] is None
    assert paired_difference([], []).n == 0
    with pytest.raises(ValueError):
        paired_difference([1, 0], [1])


def test_text_formats():
    iv = bootstrap_mean([1, 0, 1, 1])
    assert iv.text().startswith("75.0% [")
    d = paired_difference([1, 1, 0, 1], [0, 1, 0, 1])
    assert d.text().startswith("+25.0 pts [") and d.wins_text() == "1 / 0 / 3"


def test_plotting_draws_intervals(tmp_path):
    ivs = [bootstrap_mean([1, 0, 1]), bootstrap_mean([0, 0, 1]), bootstrap_mean([])]
    low, high = yerr(ivs)
    assert low[0] == pytest.approx(100 * (ivs[0].estimate - ivs[0].low)) and low[2] == high[2] == 0.0
    fig, ax = figure(5, 3)
    bars = bars_with_intervals(ax, ["a", "b", "c"], ivs)
    assert len(bars) == 3 and bars[0].get_height() == pytest.approx(100 * 2 / 3)
    line_with_band(ax, [1, 2], [10, 20], [5, 15], [15, 25], label="x")
    out = save(fig, tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_corpus_metric_bootstrap_and_paired_difference():
    from lbt_dspy.stats import bootstrap_metric, paired_metric_difference

    def f1(ys, ps):
        tp = sum(1 for y, p in zip(ys, ps) if y == p == "Yes")
        fp = sum(1 for y, p in zip(ys, ps) if y != "Yes" and p == "Yes")
        fn = sum(1 for y, p in zip(ys, ps) if y == "Yes" and p != "Yes")
        return 2 * tp / (2 * tp + fp + fn) if tp else 0.0

    rng = random.Random(6)
    labels = [rng.choice(["Yes", "No"]) for _ in range(80)]
    good = [y if rng.random() < 0.85 else ("No" if y == "Yes" else "Yes") for y in labels]
    always = ["Yes"] * 80
    iv = bootstrap_metric(f1, labels, good)
    assert iv.estimate == pytest.approx(f1(labels, good)) and iv.low <= iv.estimate <= iv.high and iv.n == 80
    assert bootstrap_metric(f1, labels, good) == iv  # seeded
    same = paired_metric_difference(f1, labels, good, list(good))
    assert (same.estimate, same.low, same.high, same.wins, same.losses) == (0.0, 0.0, 0.0, 0, 0)
    d = paired_metric_difference(f1, labels, good, always)
    assert d.estimate == pytest.approx(f1(labels, good) - f1(labels, always)) and d.low <= d.estimate <= d.high
    assert d.wins == sum(1 for y, p in zip(labels, good) if p == y and y == "No")  # always-Yes misses every No


def test_relative_improvement_and_its_unbounded_side():
    import json

    from lbt_dspy.stats import Interval, relative_improvement

    iv = relative_improvement([1, 1, 0, 1], [1, 0, 0, 1])
    assert iv.estimate == pytest.approx(0.5) and iv.low <= 0.5 <= iv.high
    assert relative_improvement([1, 0, 1], [1, 0, 1]) == Interval(0.0, 0.0, 0.0, 3)
    assert math.isnan(relative_improvement([1, 0], [0, 0]).estimate)  # no reference accuracy: undefined
    # a rare reference success: some resamples have SC = 0 and M1 > 0, so the upper side is unbounded
    wide = relative_improvement([1, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 0, 0, 0, 0])
    assert wide.estimate == pytest.approx(1.0) and wide.high == math.inf
    d = wide.to_dict()
    assert d["high"] == "inf" and json.loads(json.dumps(d, allow_nan=False))["high"] == "inf"
    assert Interval.from_dict(d) == wide
