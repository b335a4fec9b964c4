"""report.md and PNGs for a run directory: the accuracy table, LbT-score histogram, accuracy vs pairs."""

from __future__ import annotations

from pathlib import Path

from .results import summarize
from .store import RunStore

METHOD_ORDER = ["Greedy", "SC", "M1 MAX", "M1 SUM", "AVG"]


def accuracy_table(summary: dict) -> str:
    """The markdown table: one row per method, one column per student view."""
    views = summary["views"]
    head = "| method | " + " | ".join(views) + " |\n|---|" + "---|" * len(views) + "\n"
    rows = []
    for method in METHOD_ORDER:
        cells = summary["table"].get(method)
        if not cells:
            continue
        vals = []
        for view in views:
            c = cells.get(view) or cells.get("all")
            vals.append(f"{100 * c['accuracy']:.1f}% ({c['correct']:g}/{c['n']})")
        rows.append(f"| {method} | " + " | ".join(vals) + " |")
    return head + "\n".join(rows) + "\n"


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

    fig, ax = plt.subplots(figsize=(6, 4))
    view = views[-1]
    scores = [s for p in summary["problems"] for s in p.get("lbt_scores", {}).get(view, [])]
    correct = [c for p in summary["problems"] for c in p["pair_correct"]]
    right = [s for s, c in zip(scores, correct) if c >= 1]
    wrong = [s for s, c in zip(scores, correct) if c < 1]
    bins = [i / 10 for i in range(11)]
    ax.hist([right, wrong], bins=bins, stacked=True, label=["teacher answer correct", "teacher answer wrong"])
    ax.set_xlabel(f"LbT score ({view})")
    ax.set_ylabel("TR-TA pairs")
    ax.legend()
    fig.tight_layout()
    fig.savefig(run_dir / "lbt_score_hist.png", dpi=120)
    plt.close(fig)

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


def _model_label(entry) -> str:
    if not isinstance(entry, dict):
        return "?"
    cfg = entry.get("model_cfg") or {}
    return f"{entry.get('model_type', 'embedded')}:{cfg.get('name') or cfg.get('model') or 'default'}"
