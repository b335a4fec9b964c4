"""report.md and PNGs for a run directory: accuracies with 95% intervals, paired comparisons, the paper's
protocols (Table A6, Fig. 4, published rows), the LbT-score histogram.

Every accuracy is a mean over problems; its interval is the seeded percentile bootstrap over problems, and
every comparison of two methods is the paired bootstrap of their difference with wins / losses / ties
(`lbt_dspy.stats`). The same records and config give the same report. The tables are rendered from the typed
results (`lbt_dspy.results`), read back from the summary's dicts with their ``from_dict`` (so a summary.json
written by an older version renders the same tables).
"""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from statistics import mean

from .. import stats
from ..plotting import bars_with_intervals, figure, line_with_band, pyplot, save
from ..model_output import answers_section, output_table
from ..results import CodeScore, Fig4Point, MethodAccuracy, PairedComparison, TableA6
from ..store import RunStore
from ..tables import Column, markdown_table
from ..tables import comparison_table as render_comparisons
from .results import VOTED, code_table_rows, summarize

METHOD_ORDER = ["Greedy", "SC", "M1 MAX", "M1 SUM", "AVG"]
# (a, b) of "a - b": the comparisons a user of M1 makes (the paper's Improv. is M1 SUM - SC).
COMPARISONS = [("M1 SUM", "SC"), ("M1 MAX", "SC"), ("M1 SUM", "Greedy"), ("M1 MAX", "Greedy")]


def _pct(x) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _pct2(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _iv(d: dict | None) -> stats.Interval | None:
    return None if d is None else stats.Interval.from_dict(d)


def _text(iv: stats.Interval | None) -> str:
    return "-" if iv is None or iv.n == 0 or math.isnan(iv.estimate) else iv.text()


def _iv_text(d: dict | None) -> str:
    return _text(_iv(d))


# --- evidence: intervals and comparisons from the per-problem scores ---------------------------------
def evidence(run_dir: str | Path, summary: dict, *, a6_pairs: int | None = None, a6_subsets: int | None = None) -> dict:
    """The intervals, paired comparisons and protocol tables of a run (JSON-ready)."""
    if summary.get("code"):
        return code_evidence(summary, RunStore(run_dir).read_config())
    from .protocols import protocols

    ev = protocols(run_dir, a6_pairs=a6_pairs, a6_subsets=a6_subsets)
    seed, resamples = ev["seed"], ev["resamples"]
    ev["intervals"] = {view: {m: stats.bootstrap_mean(list(per[m][tp] for tp in sorted(per[m])), resamples=resamples,
                                                      seed=seed).to_dict()
                              for m in METHOD_ORDER if per.get(m)}
                       for view, per in ev["scores"].items()}
    per = ev["scores"][ev["view"]]
    ev["comparisons"] = [PairedComparison.of(a, b, stats.paired_difference(per[a], per[b], resamples=resamples,
                                                                           seed=seed)).to_dict()
                         for a, b in COMPARISONS if per.get(a) and per.get(b)]
    return ev


def code_evidence(summary: dict, cfg: dict) -> dict:
    """Code runs: the code table's rows (`CodeScore`) with the interval of each method's mean S-score over the
    problems where it is defined, and the paired M1 MAX − Avg. (and − Greedy) differences over the problems
    where both are defined."""
    code = summary["code"]
    seed, resamples = int(cfg.get("seed", 0)), int(cfg.get("bootstrap_resamples", stats.RESAMPLES))
    views = len(code["views"])
    per = {tp: code_table_rows(code, tp) for tp in code["problems"]}
    rows = code_table_rows(code)

    def scores(j):  # {problem: S-score} of row j where it is defined
        return {tp: got[j].s_score for tp, got in per.items() if got[j].s_score is not None}

    rows = [replace(r, interval=stats.bootstrap_mean([v[tp] for tp in sorted(v)], resamples=resamples, seed=seed))
            for r, v in ((r, scores(j)) for j, r in enumerate(rows))]
    main = [j for j, r in enumerate(rows) if r.method == "M1 MAX" and not r.visible][-1:]  # the last view's
    pairs = []
    if main:
        j = main[0]
        find = {(r.method, r.visible): i for i, r in enumerate(rows) if r.method != "M1 MAX"}
        pairs = [(j, find[("Avg.", False)]), (j + 1, find[("Avg.", True)]), (j, find[("Greedy", False)])]
    comps = []
    for a, b in pairs:
        d = stats.paired_difference(scores(a), scores(b), resamples=resamples, seed=seed)
        if d.n:
            comps.append(PairedComparison.of(rows[a].label(views), rows[b].label(views), d, scale=1, digits=3,
                                             unit="").to_dict())
    return {"seed": seed, "resamples": resamples, "rows": [r.to_dict() for r in rows], "comparisons": comps}


def interval_note(ev: dict, n: int) -> str:
    return (f"Intervals: 95% percentile bootstrap over the {n} problems ({ev['resamples']} resamples, seed "
            f"{ev['seed']}); a difference is bootstrapped paired (the same resampled problems for both methods). "
            "wins / losses / ties: problems where the first method scores higher / lower / the same.")


# --- tables ------------------------------------------------------------------------------------------
def accuracy_table(summary: dict) -> str:
    """The markdown table: one row per method, one column per student view (code runs: the S-score table).
    With the report's evidence in `summary` (after `write_report`), each cell carries its 95% interval."""
    if summary.get("code"):
        return code_table(summary)
    return method_table(summary, METHOD_ORDER)


def console_text(summary: dict) -> str:
    """What `lbt m1`, `lbt report` and `lbt select` print: the accuracy table with its 95% intervals and the
    paired comparisons (both need ``summary["evidence"]``, which `write_report` or `evidence` adds)."""
    text = accuracy_table(summary)
    ev = summary.get("evidence") or {}
    if ev.get("comparisons"):
        unit = "S-score" if summary.get("code") else "accuracy points"
        text += "\n" + comparison_table(ev, summary["num_problems"], unit=unit)
    if summary.get("answers"):
        text += "\n" + output_table(summary["answers"])
    return text


def method_table(summary: dict, methods: list[str]) -> str:
    """Accuracy (exam-scorer score) of `methods`: one row per method, one column per student view; with
    evidence, "acc% [95% interval] (correct/n)" (`MethodAccuracy.cell`)."""
    views = summary["views"]
    ivs = (summary.get("evidence") or {}).get("intervals") or {}
    by_method: dict[str, dict] = {}
    for r in MethodAccuracy.from_table(summary["table"]):  # view None: the same row in every view's column
        by_method.setdefault(r.method, {})[r.view] = r

    def cell(view):
        def f(row):
            r = row[1].get(view) or row[1][None]
            return r.cell(_iv((ivs.get(view) or {}).get(r.method)))
        return f

    columns = [Column(f"method ({summary['num_problems']} problems)", lambda row: row[0])]
    columns += [Column(view, cell(view)) for view in views]
    return markdown_table([(m, by_method[m]) for m in methods if m in by_method], columns)


def comparison_table(ev: dict, n: int, unit: str = "accuracy points") -> str:
    """Paired differences: a - b, its 95% interval, wins / losses / ties, and whether 0 is excluded
    (`lbt_dspy.tables.comparison_table` of the evidence's comparisons)."""
    return render_comparisons([PairedComparison.from_dict(c) for c in ev["comparisons"]], f"comparison ({n} problems)",
                              differences=[("accuracy", f"difference ({unit})")])


def a6_table(ev: dict, published: dict | None = None) -> str:
    """Table A6: measured row (and the paper's, when it has one for these models)."""
    a = TableA6.from_dict(ev["a6"])
    k, P = a.k, a.pairs

    def ms(x):
        return f"{100 * x.mean:.2f} ± {100 * x.std:.2f}"

    rows = [f"| row ({a.n} problems) | Greedy | SC({P}) | SC({k}) | M1 MAX({k}) | M1 SUM({k}) | Improv. "
            f"(M1 SUM({k}) − SC({P})) | M1 SUM({k}) − SC({P}), paired 95% CI | wins / losses |",
            "|---|---|---|---|---|---|---|---|---|"]
    d = a.comparison("M1 SUM")
    rows.append(f"| measured ({a.view}) | {_pct2(a.greedy)} | {_pct2(a.sc_all)} | {ms(a.at_k['SC'])} | "
                f"{ms(a.at_k['M1 MAX'])} | {ms(a.at_k['M1 SUM'])} | {100 * a.improvement('M1 SUM'):+.2f} | {d.text} | "
                f"{d.wins} / {d.losses} |")
    if published and published.get("a6"):
        p = published["a6"]
        rows.append(f"| paper, Table A6 ({published['teacher']} → {' & '.join(published['students'])}; 181 problems, "
                    f"SC 256, M1 24) | {p['Greedy']:.2f} | {p['SC(256)']:.2f} | - | {p['M1 MAX(24)'][0]:.2f} ± "
                    f"{p['M1 MAX(24)'][1]:.2f} | {p['M1 SUM(24)'][0]:.2f} ± {p['M1 SUM(24)'][1]:.2f} | "
                    f"{p['Improv.']:+.2f} | - | - |")
    return "\n".join(rows) + "\n"


def published_table(summary: dict, ev: dict) -> str:
    """Table 2 of the paper beside the measured row (math181 runs whose models the paper used)."""
    pub = ev["published"]
    iv = ev["intervals"][ev["view"]]
    n = summary["num_problems"]
    rows = [f"| row | problems | pairs | Greedy | SC | M1 MAX | M1 SUM | Improv. (M1 SUM − SC) |",
            "|---|---|---|---|---|---|---|---|"]
    imp = next((c for c in ev["comparisons"] if (c["a"], c["b"]) == ("M1 SUM", "SC")), None)
    rows.append(f"| measured ({ev['view']}) | {n} | {ev['pairs']} | " +
                " | ".join(_iv_text(iv.get(m)) for m in ("Greedy", "SC", "M1 MAX", "M1 SUM")) +
                f" | {imp['text'] if imp else '-'} |")
    t2 = pub["table2"]
    rows.append(f"| paper, Table 2 ({pub['teacher']} → {' & '.join(pub['students'])}) | 181 | 256 | " +
                " | ".join(f"{t2[m]:.2f}" for m in ("Greedy", "SC", "M1 MAX", "M1 SUM")) + f" | {t2['Improv.']:+.2f} |")
    return "\n".join(rows) + "\n"


def _fig4_columns() -> list[Column]:
    """SC / M1 accuracy and M1's relative improvement over SC: the columns of both panels of Fig. 4."""
    return ([Column(m, lambda p, m=m: _text(p.accuracy[m])) for m in VOTED] +
            [Column("M1 SUM rel. improvement over SC [95% CI]", lambda p: _text(p.relative["M1 SUM"])),
             Column("M1 MAX rel. improvement [95% CI]", lambda p: _text(p.relative["M1 MAX"]))])


def fig4_table(ev: dict) -> str:
    """Fig. 4 (left) as a table: per number of pairs (`Fig4Point`s of `accuracy_vs_pairs`)."""
    points = [Fig4Point.from_dict(r) for r in ev["fig4"]]
    head = Column(f"pairs ({points[0].n if points else 0} problems)", lambda p: str(p.pairs))
    return markdown_table(points, [head] + _fig4_columns())


def level_table(ev: dict) -> str:
    """Fig. 4 (right) as a table: per difficulty level, all pairs."""
    points = [Fig4Point.from_dict(r) for r in ev["levels"]]
    return markdown_table(points, [Column("level", lambda p: str(p.level)), Column("problems", lambda p: str(p.n))]
                          + _fig4_columns())


def _s(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _code_rows(summary: dict) -> list[CodeScore]:
    """The code table's rows: with their intervals once the report's evidence is in `summary`."""
    ev = summary.get("evidence") or {}
    return [CodeScore.from_dict(r) for r in ev["rows"]] if ev.get("rows") else code_table_rows(summary["code"])


def code_table(summary: dict) -> str:
    """Code runs: the mean hidden-test S-score of each method (Table 3's rows), over the problems where
    it is defined ("-" rows, e.g. Avg. (V=1), skip problems without a TA passing the visible tests); with
    evidence, the mean's 95% bootstrap interval over those problems."""
    views = len(summary["code"]["views"])

    def ci(r: CodeScore) -> str:
        return "-" if r.interval is None or r.interval.n == 0 else f"[{r.interval.low:.3f}, {r.interval.high:.3f}]"

    return markdown_table(_code_rows(summary), [
        Column("method", lambda r: r.label(views)), Column("mean S-score", lambda r: _s(r.s_score)),
        Column("mean V-score", lambda r: _s(r.v_score)),
        Column(f"problems (of {summary.get('num_problems', '?')})", lambda r: f"{r.n}/{r.of}"),
        Column("95% CI of the S-score", ci)])


def code_problem_table(summary: dict) -> str:
    """Code runs: S-score per problem and method, with each problem's number of TAs with V-score 1."""
    code = summary["code"]
    views = len(code["views"])
    columns = [Column("problem", lambda p: p[0]), Column("TAs with V=1", lambda p: f"{p[1]['num_v1']}/{len(p[1]['v_scores'])}")]
    columns += [Column(r.label(views), lambda p, j=j: _s(CodeScore.from_dict(p[1]["rows"][j]).s_score))
                for j, r in enumerate(code_table_rows(code))]
    return markdown_table(list(code["problems"].items()), columns)


CODE_NOTE = (
    "S-score: fraction of the problem's hidden checks passed; V-score: 1 iff all visible checks pass (the "
    "exam score of the students, so the LbT score is the fraction of exam problems solved to the visible "
    "tests). Greedy: the teacher at temperature 0. Avg.: mean S-score of all TAs (a random pick). Avg. (V=1): "
    "mean S-score of the TAs with V-score 1 (\"-\" when none). M1 MAX: the TA with the best LbT score (ties: "
    "higher V-score, then the earlier pair); M1 MAX (V=1): the same among the TAs with V-score 1. Code "
    "answers are not voted, so SC and M1 SUM do not apply. Means are over the problems where a method is "
    "defined (the problems column); mean V-score: the same picks' V-scores.")


# --- figures -----------------------------------------------------------------------------------------
def _draw_accuracy(run_dir: Path, summary: dict, ev: dict) -> None:
    views = summary["views"]
    methods = [m for m in METHOD_ORDER if m in summary["table"]]
    fig, ax = figure(7, 4)
    width = 0.8 / max(len(views), 1)
    for j, view in enumerate(views):
        ivs = [_iv(ev["intervals"][view][m]) for m in methods]
        bars_with_intervals(ax, methods, ivs, offset=j * width, width=width, label=view, color=f"C{j}",
                            annotate=len(views) == 1)
    ax.set_xticks([i + width * (len(views) - 1) / 2 for i in range(len(methods))], methods)
    ax.set_ylabel("accuracy (%), 95% bootstrap CI")
    ax.set_ylim(0, 100)
    ax.set_title(f"M1 on {summary['num_problems']} problems")
    ax.legend(title="student", fontsize=8)
    save(fig, run_dir / "accuracy_by_method.png")


def _draw_differences(path: Path, ev: dict, n: int, scale: float = 100.0, xlabel: str = "difference (points)") -> None:
    comps = [PairedComparison.from_dict(c) for c in ev["comparisons"]]
    if not comps:
        return
    fig, ax = figure(6, 0.6 * len(comps) + 1.4)
    ys = list(range(len(comps)))[::-1]
    for y, c in zip(ys, comps):
        d = c.difference
        est, lo, hi = (scale * x for x in (d.estimate, d.low, d.high))
        ax.errorbar([est], [y], xerr=[[est - lo], [hi - est]], fmt="o", capsize=4,
                    color="C2" if c.excludes_zero() else "C7")
        ax.annotate(f"+{c.wins} / −{c.losses}", (hi, y), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=7)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.margins(x=0.15)
    ax.set_yticks(ys, [f"{c.a} − {c.b}" for c in comps])
    ax.set_xlabel(f"{xlabel}, paired 95% CI; wins / losses")
    ax.set_title(f"paired differences on {n} problems")
    save(fig, path)


def _band(ivs: list) -> tuple[list, list, list]:
    """(estimates, lows, highs) in percent of `stats.Interval`s."""
    return [100 * iv.estimate for iv in ivs], [100 * iv.low for iv in ivs], [100 * iv.high for iv in ivs]


def _draw_pairs(run_dir: Path, ev: dict) -> None:
    rows = [Fig4Point.from_dict(r) for r in ev["fig4"]]
    if not rows:
        return
    xs = [r.pairs for r in rows]
    fig, ax = figure(6, 4)
    for m in VOTED:
        line_with_band(ax, xs, *_band([r.accuracy[m] for r in rows]), label=m)
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("TR-TA pairs per problem")
    ax.set_ylabel("accuracy (%), 95% bootstrap band")
    ax.set_title(f"accuracy vs number of pairs ({ev['view']}, {rows[0].n} problems)")
    ax.legend()
    save(fig, run_dir / "accuracy_vs_pairs.png")

    levels = [Fig4Point.from_dict(r) for r in ev.get("levels") or []]
    if levels:  # Fig. 4 has two panels: vs pairs, vs level
        plt_fig, (ax, ax2) = pyplot().subplots(1, 2, figsize=(11, 4))
    else:
        plt_fig, ax = figure(6, 4)
    drawn = 0
    for j, m in enumerate(("M1 SUM", "M1 MAX")):
        pts = [(r.pairs, r.relative[m]) for r in rows if not math.isnan(r.relative[m].estimate)]
        if pts:
            line_with_band(ax, [p[0] for p in pts], *_band([p[1] for p in pts]), label=m, color=f"C{j + 1}")
            drawn += 1
    ax.axhline(0, color="black", linewidth=0.8)
    if len(xs) > 1:
        ax.set_xscale("log", base=2)
    ax.set_xlabel("TR-TA pairs per problem")
    ax.set_ylabel("relative improvement over SC (%), 95% band")
    ax.set_title("Fig. 4: M1 over SC vs number of pairs")
    if drawn:
        ax.legend()
    else:  # M1 / SC - 1 is undefined where SC is 0: say so instead of an empty plot
        ax.text(0.5, 0.5, "undefined: SC accuracy is 0 at every number of pairs", ha="center", va="center",
                transform=ax.transAxes)
    if levels:
        for j, m in enumerate(("M1 SUM", "M1 MAX")):
            pts = [(r.level + (j - 0.5) * 0.15, r.relative[m]) for r in levels
                   if not math.isnan(r.relative[m].estimate)]
            if pts:
                est, low, high = _band([p[1] for p in pts])
                finite = [v for v in est + low + high if math.isfinite(v)]
                cap = max(finite) + 0.15 * ((max(finite) - min(finite)) or 1.0)  # an unbounded side: to the edge
                ax2.errorbar([p[0] for p in pts], est, yerr=[[e - lo for e, lo in zip(est, low)],
                                                              [min(h, cap) - e for e, h in zip(est, high)]],
                             fmt="o-", capsize=4, label=m, color=f"C{j + 1}")
        ax2.axhline(0, color="black", linewidth=0.8)
        ax2.set_xticks([r.level for r in levels], [f"{r.level}\n(n={r.n})" for r in levels])
        ax2.set_xlabel("difficulty level (all pairs)")
        ax2.set_ylabel("relative improvement over SC (%), 95% CI")
        ax2.set_title("Fig. 4: M1 over SC by level")
        ax2.legend()
    save(plt_fig, run_dir / "fig4_relative_improvement.png")


def _draw_a6(run_dir: Path, ev: dict) -> None:
    if not ev["a6"]:
        return
    a = TableA6.from_dict(ev["a6"])
    labels = ["Greedy", f"SC({a.pairs})", f"SC({a.k})", f"M1 MAX({a.k})", f"M1 SUM({a.k})"]
    vals = [a.greedy or 0.0, a.sc_all or 0.0] + [a.at_k[m].mean for m in VOTED]
    errs = [0.0, 0.0] + [a.at_k[m].std for m in VOTED]
    fig, ax = figure(7, 4)
    ax.bar(range(5), [100 * v for v in vals], yerr=[100 * e for e in errs], capsize=4,
           color=["C0", "C1", "C1", "C2", "C3"])
    ax.set_xticks(range(5), labels)
    ax.set_ylabel(f"accuracy (%); bars: ± std over {a.subsets} subsets")
    ax.set_ylim(0, 100)
    ax.set_title(f"Table A6 protocol: M1 with {a.k} pairs vs SC with {a.pairs} ({a.n} problems)")
    save(fig, run_dir / "table_a6.png")


# --- report.md ---------------------------------------------------------------------------------------
def write_report(run_dir: str | Path, summary: dict | None = None, *, a6_pairs: int | None = None,
                 a6_subsets: int | None = None) -> Path:
    """Write report.md, summary.json (with the evidence) and the PNGs into the run directory; returns
    report.md's path. `a6_pairs` / `a6_subsets` override the config's (e.g. for runs with few pairs)."""
    run_dir = Path(run_dir)
    summary = summary or summarize(run_dir)
    store = RunStore(run_dir)
    ev = evidence(run_dir, summary, a6_pairs=a6_pairs, a6_subsets=a6_subsets)
    summary["evidence"] = ev
    summary["engine"] = read_engine(run_dir)
    store.write_json("summary.json", summary)
    views = summary["views"]
    if summary.get("code"):
        return _write_code_report(run_dir, summary, store, ev)

    n = summary["num_problems"]
    _draw_accuracy(run_dir, summary, ev)
    _draw_differences(run_dir / "method_differences.png", ev, n)
    correct = _lbt_score_hist(run_dir, summary, views[-1], ("teacher answer correct", "teacher answer wrong"))
    _draw_pairs(run_dir, ev)
    _draw_a6(run_dir, ev)

    cfg = store.read_config()
    n_right = sum(1 for c in correct if c >= 1)
    lines = [
        "# LbT M1 report", "",
        cfg.get("description") or "", "",
        f"- problems: {n}; TR-TA pairs: {len(correct)} ({n_right} with a correct answer), up to {ev['pairs']} "
        "per problem",
        f"- students: {', '.join(summary['students'])}",
        f"- teacher: `{_model_label(cfg.get('teacher_model_cfg'))}`",
        f"- {interval_note(ev, n)}", "",
        f"## Accuracy ({n} problems)", "", accuracy_table(summary), "",
        "Greedy: the teacher at temperature 0. SC: majority vote over the pairs' answers. M1 MAX: the answer of "
        "the pair with the best LbT score. M1 SUM: the answer with the largest total LbT score. AVG: mean accuracy "
        "of all pairs (a random pick). Answers are grouped by mathematical equivalence. Cells: accuracy [95% CI] "
        "(correct/problems).", "",
        f"## Paired comparisons ({n} problems, student view `{ev['view']}`)", "", comparison_table(ev, n), "",
        "![paired differences](method_differences.png)", "",
    ] + ([answers_section(summary["answers"])] if summary.get("answers") else [])
    pub = ev["published"]
    lines += ["## The paper's rows", ""]
    if pub["applies"] and pub.get("table2"):
        lines += [f"Source: {_source()}.", "", published_table(summary, ev), ""]
    elif pub["applies"]:
        lines += [f"No published row: {pub['why']}.", ""]
    else:
        lines += [f"No published row: the paper's Table 2 / Table A6 are on math181 ({pub['why']}).", ""]
    lines += ["## Table A6 protocol: M1 with few pairs vs SC with all", ""]
    if ev["a6"]:
        a = TableA6.from_dict(ev["a6"])
        lines += [f"M1 with k = {a.k} TR-TA pairs per problem against SC with all {a.pairs}, mean ± std "
                  f"(sample std) over {a.subsets} random subsets of {a.k} pairs per problem (the paper: k = 24 "
                  "of 256, 10 subsets)" + ("" if a.k == 24 else f"; k = {a.k} because the run has "
                                           f"{a.pairs} pairs") +
                  ". The paired interval averages each problem's M1 score over the subsets.", "",
                  a6_table(ev, pub if pub.get("a6") else None), "", "![Table A6](table_a6.png)", ""]
    else:
        lines += [f"Not emitted: the run has {ev['pairs']} pairs per problem, not more than k = {ev['a6_k']} "
                  "(set `a6_pairs` in the config or `lbt report --a6-pairs K`).", ""]
    lines += [
        "## Accuracy vs number of TR-TA pairs (Fig. 4)", "",
        f"Each problem's score averaged over {cfg.get('subsample_repeats', 20)} random subsets of that many pairs "
        "(all pairs: one); intervals over problems. Relative improvement: M1 / SC − 1 at the same number of pairs, "
        "paired interval (undefined where SC is 0).", "", fig4_table(ev), "",
    ]
    if ev.get("levels"):
        lines += [f"### By difficulty level (all {ev['pairs']} pairs)", "", level_table(ev), ""]
    lines += ["![accuracy by method](accuracy_by_method.png)", "", "![LbT scores](lbt_score_hist.png)", "",
              "![accuracy vs pairs](accuracy_vs_pairs.png)", "",
              "![Fig. 4 relative improvement](fig4_relative_improvement.png)", ""]
    return store.write_text("report.md", "\n".join(lines + engine_section(summary)))


def read_engine(run_dir: str | Path) -> dict | None:
    """``engine.json``: what the engine reported of the last `lbt m1` invocation that finished (its prefix-cache
    hit rates, per replica and in total); None when there is none (no vLLM server lbt started)."""
    import json

    from ..errors import LbtError

    path = Path(run_dir) / "engine.json"
    if not path.exists():
        return None
    try:
        engine = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise LbtError(f"{path}: unreadable ({exc}); delete it and rerun `lbt m1` to write it again") from None
    if not isinstance(engine, dict):
        raise LbtError(f"{path}: expected a JSON object; delete it and rerun `lbt m1` to write it again")
    return engine


def engine_section(summary: dict) -> list[str]:
    """report.md's ``## Engine``: the prefix-cache hit rates of the last `lbt m1` invocation, per replica."""
    from ..models.vllm_server import prefix_cache_lines

    lines = prefix_cache_lines((summary.get("engine") or {}).get("prefix_cache"))
    if not lines:
        return []
    return ["## Engine", "", "The last `lbt m1` invocation on this run directory (`engine.json`):", "", "```",
            *lines, "```", ""]


def _source() -> str:
    from .protocols import SOURCE

    return SOURCE


def _write_code_report(run_dir: Path, summary: dict, store: RunStore, ev: dict) -> Path:
    """report.md for a code run: the S-score table (overall and per problem), paired comparisons, PNGs."""
    code = summary["code"]
    n = summary["num_problems"]
    rows = [r for r in _code_rows(summary) if r.s_score is not None]
    methods = [r.label(len(code["views"])) for r in rows]
    fig, ax = figure(max(6, 1.1 * len(methods)), 4)
    bars_with_intervals(ax, methods, [r.interval for r in rows], scale=1.0)
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("mean S-score (hidden tests), 95% CI")
    ax.set_title(f"M1 for code on {n} problems")
    save(fig, run_dir / "code_s_score.png")
    _draw_differences(run_dir / "method_differences.png", ev, n, scale=1.0, xlabel="S-score difference")

    passed = _lbt_score_hist(run_dir, summary, summary["views"][-1] if summary["views"] else None,
                             ("TA passes its visible tests", "TA fails a visible test"))

    cfg = store.read_config()
    s_all = [s for row in code["problems"].values() for s in row["s_scores"] if s is not None]
    lines = [
        "# LbT M1 report (code)", "",
        cfg.get("description") or "", "",
        f"- problems: {n}; TR-TA pairs: {len(passed)} "
        f"({sum(1 for c in passed if c >= 1)} with V-score 1; mean TA S-score {_s(mean(s_all) if s_all else None)})",
        f"- students: {', '.join(summary['students']) or '(no exam records)'}",
        f"- teacher: `{_model_label(cfg.get('teacher_model_cfg'))}`",
        f"- {interval_note(ev, n)}", "",
        "## Code (S-score)", "", f"{n} problems.", "", code_table(summary), "", CODE_NOTE, "",
        f"## Paired comparisons ({n} problems; each over the problems where both methods are defined)", "",
        comparison_table(ev, n, unit="S-score"), "",
        "### S-score per problem", "", code_problem_table(summary), "",
        "![S-score by method](code_s_score.png)", "", "![paired differences](method_differences.png)", "",
        "![LbT scores](lbt_score_hist.png)", "",
    ] + ([answers_section(summary["answers"])] if summary.get("answers") else [])
    return store.write_text("report.md", "\n".join(lines + engine_section(summary)))


def _model_label(entry) -> str:
    if not isinstance(entry, dict):
        return "?"
    cfg = entry.get("model_cfg") or {}
    return f"{entry.get('model_type', 'embedded')}:{cfg.get('name') or cfg.get('model') or 'default'}"


def _lbt_score_hist(run_dir: Path, summary: dict, view, labels: tuple[str, str]) -> list:
    """lbt_score_hist.png: the pairs' LbT scores, stacked by whether the teacher's answer was right;
    returns each pair's correctness."""
    scores = [s for p in summary["problems"] for s in p.get("lbt_scores", {}).get(view, [])]
    ok = [c for p in summary["problems"] for c in p["pair_correct"]]
    fig, ax = figure(6, 4)
    ax.hist([[s for s, c in zip(scores, ok) if c >= 1], [s for s, c in zip(scores, ok) if c < 1]],
            bins=[i / 10 for i in range(11)], stacked=True, label=list(labels))
    ax.set_xlabel(f"LbT score ({view})")
    ax.set_ylabel("TR-TA pairs")
    ax.set_title(f"{len(ok)} TR-TA pairs of {summary['num_problems']} problems")
    ax.legend()
    save(fig, run_dir / "lbt_score_hist.png")
    return ok
