"""report.md and PNGs for a run directory: the accuracy table, LbT-score histogram, accuracy vs pairs."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

from .results import summarize
from ..store import RunStore

METHOD_ORDER = ["Greedy", "SC", "M1 MAX", "M1 SUM", "AVG"]


def accuracy_table(summary: dict) -> str:
    """The markdown table: one row per method, one column per student view (code runs: the S-score table)."""
    if summary.get("code"):
        return code_table(summary)
    return method_table(summary, METHOD_ORDER)


def method_table(summary: dict, methods: list[str]) -> str:
    """Accuracy (exam-scorer score) of `methods`: one row per method, one column per student view."""
    views = summary["views"]
    head = "| method | " + " | ".join(views) + " |\n|---|" + "---|" * len(views) + "\n"
    rows = []
    for method in methods:
        cells = summary["table"].get(method)
        if not cells:
            continue
        vals = []
        for view in views:
            c = cells.get(view) or cells.get("all")
            vals.append(f"{100 * c['accuracy']:.1f}% ({c['correct']:.4g}/{c['n']})")
        rows.append(f"| {method} | " + " | ".join(vals) + " |")
    return head + "\n".join(rows) + "\n"


def _s(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def code_table(summary: dict) -> str:
    """Code runs: the mean hidden-test S-score of each method (Table 3's rows), over the problems where
    it is defined ("-" rows, e.g. Avg. (V=1), skip problems without a TA passing the visible tests)."""
    code = summary["code"]
    rows = ["| method | mean S-score | mean V-score | problems |", "|---|---|---|---|"]
    for m in code["methods"]:
        c = code["table"][m]
        rows.append(f"| {m} | {_s(c['mean'])} | {_s(c.get('v_mean'))} | {c['n']}/{c['of']} |")
    return "\n".join(rows) + "\n"


def code_problem_table(summary: dict) -> str:
    """Code runs: S-score per problem and method, with each problem's number of TAs with V-score 1."""
    code = summary["code"]
    methods = code["methods"]
    rows = ["| problem | TAs with V=1 | " + " | ".join(methods) + " |", "|---|---|" + "---|" * len(methods)]
    for tp, row in code["problems"].items():
        cells = [_s(row["scores"].get(m)) for m in methods]
        rows.append(f"| {tp} | {row['num_v1']}/{len(row['v_scores'])} | " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


CODE_NOTE = (
    "S-score: fraction of the problem's hidden checks passed; V-score: 1 iff all visible checks pass (the "
    "exam score of the students, so the LbT score is the fraction of exam problems solved to the visible "
    "tests). Greedy: the teacher at temperature 0. Avg.: mean S-score of all TAs (a random pick). Avg. (V=1): "
    "mean S-score of the TAs with V-score 1 (\"-\" when none). M1 MAX: the TA with the best LbT score (ties: "
    "higher V-score, then the earlier pair); M1 MAX (V=1): the same among the TAs with V-score 1. Code "
    "answers are not voted, so SC and M1 SUM do not apply. Means are over the problems where a method is "
    "defined (the problems column); mean V-score: the same picks' V-scores.")


def write_report(run_dir: str | Path, summary: dict | None = None) -> Path:
    """Write report.md, summary.json and the PNGs into the run directory; returns report.md's path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    summary = summary or summarize(run_dir)
    store = RunStore(run_dir)
    store.write_json("summary.json", summary)
    views = summary["views"]
    if summary.get("code"):
        return _write_code_report(run_dir, summary, store, plt)

    fig, ax = plt.subplots(figsize=(7, 4))
    methods = [m for m in METHOD_ORDER if m in summary["table"]]
    width = 0.8 / max(len(views), 1)
    for j, view in enumerate(views):
        accs = [100 * (summary["table"][m].get(view) or summary["table"][m]["all"])["accuracy"] for m in methods]
        ax.bar([i + j * width for i in range(len(methods))], accs, width, label=view)
    ax.set_xticks([i + width * (len(views) - 1) / 2 for i in range(len(methods))], methods)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"M1 on {summary['num_problems']} problems")
    ax.legend(title="student", fontsize=8)
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_by_method.png", dpi=120)
    plt.close(fig)

    correct = _lbt_score_hist(plt, run_dir, summary, views[-1], ("teacher answer correct", "teacher answer wrong"))

    curve = summary["curve"]
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in ("SC", "M1 MAX", "M1 SUM"):
        ax.plot(curve["sizes"], [100 * a for a in curve[method]], marker="o", label=method)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("TR-TA pairs per problem")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"accuracy vs number of pairs ({curve['view']})")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "accuracy_vs_pairs.png", dpi=120)
    plt.close(fig)

    cfg = store.read_config()
    n_right = sum(1 for c in correct if c >= 1)
    lines = [
        "# LbT M1 report", "",
        cfg.get("description") or "", "",
        f"- problems: {summary['num_problems']}; TR-TA pairs: {len(correct)} ({n_right} with a correct answer)",
        f"- students: {', '.join(summary['students'])}",
        f"- teacher: `{_model_label(cfg.get('teacher_model_cfg'))}`", "",
        "## Accuracy", "", accuracy_table(summary), "",
        "Greedy: the teacher at temperature 0. SC: majority vote over the pairs' answers. M1 MAX: the answer of "
        "the pair with the best LbT score. M1 SUM: the answer with the largest total LbT score. AVG: mean accuracy "
        "of all pairs (a random pick). Answers are grouped by mathematical equivalence.", "",
        "## Accuracy vs number of TR-TA pairs", "",
        "| pairs | " + " | ".join(str(s) for s in curve["sizes"]) + " |",
        "|---|" + "---|" * len(curve["sizes"]),
        *[f"| {m} | " + " | ".join(f"{100 * a:.1f}" for a in curve[m]) + " |" for m in ("SC", "M1 MAX", "M1 SUM")],
        "", "![accuracy by method](accuracy_by_method.png)", "", "![LbT scores](lbt_score_hist.png)", "",
        "![accuracy vs pairs](accuracy_vs_pairs.png)", "",
    ]
    return store.write_text("report.md", "\n".join(lines))


def _write_code_report(run_dir: Path, summary: dict, store: RunStore, plt) -> Path:
    """report.md for a code run: the S-score table (overall and per problem), the V-score table, PNGs."""
    code = summary["code"]
    methods = [m for m in code["methods"] if code["table"][m]["mean"] is not None]
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods)), 4))
    ax.bar(range(len(methods)), [code["table"][m]["mean"] for m in methods])
    ax.set_xticks(range(len(methods)), methods, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean S-score (hidden tests)")
    ax.set_title(f"M1 for code on {summary['num_problems']} problems")
    fig.tight_layout()
    fig.savefig(run_dir / "code_s_score.png", dpi=120)
    plt.close(fig)

    passed = _lbt_score_hist(plt, run_dir, summary, summary["views"][-1] if summary["views"] else None,
                             ("TA passes its visible tests", "TA fails a visible test"))

    cfg = store.read_config()
    s_all = [s for row in code["problems"].values() for s in row["s_scores"] if s is not None]
    lines = [
        "# LbT M1 report (code)", "",
        cfg.get("description") or "", "",
        f"- problems: {summary['num_problems']}; TR-TA pairs: {len(passed)} "
        f"({sum(1 for c in passed if c >= 1)} with V-score 1; mean TA S-score {_s(mean(s_all) if s_all else None)})",
        f"- students: {', '.join(summary['students']) or '(no exam records)'}",
        f"- teacher: `{_model_label(cfg.get('teacher_model_cfg'))}`", "",
        "## Code (S-score)", "", code_table(summary), "", CODE_NOTE, "",
        "### S-score per problem", "", code_problem_table(summary), "",
        "![S-score by method](code_s_score.png)", "", "![LbT scores](lbt_score_hist.png)", "",
    ]
    return store.write_text("report.md", "\n".join(lines))


def _model_label(entry) -> str:
    if not isinstance(entry, dict):
        return "?"
    cfg = entry.get("model_cfg") or {}
    return f"{entry.get('model_type', 'embedded')}:{cfg.get('name') or cfg.get('model') or 'default'}"


def _lbt_score_hist(plt, run_dir: Path, summary: dict, view, labels: tuple[str, str]) -> list:
    """lbt_score_hist.png: the pairs' LbT scores, stacked by whether the teacher's answer was right;
    returns each pair's correctness."""
    scores = [s for p in summary["problems"] for s in p.get("lbt_scores", {}).get(view, [])]
    ok = [c for p in summary["problems"] for c in p["pair_correct"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist([[s for s, c in zip(scores, ok) if c >= 1], [s for s, c in zip(scores, ok) if c < 1]],
            bins=[i / 10 for i in range(11)], stacked=True, label=list(labels))
    ax.set_xlabel(f"LbT score ({view})")
    ax.set_ylabel("TR-TA pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "lbt_score_hist.png", dpi=120)
    plt.close(fig)
    return ok
