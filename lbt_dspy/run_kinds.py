"""`lbt report DIR` and `lbt select DIR` for every kind of run directory: M1 (math or code), M2 eval, M3.

The kind is read from what the run saved: an `lbt m2 eval` directory has ``eval_summary.json``; an
`lbt m3` run has ``data.json`` next to its ``config.yaml`` (the task it optimised for); an `lbt m1` run
has ``config.yaml`` and its teacher records (math or code is then the run's own scorer). `select` only
reads; `report` (re)writes the run's report.md and PNGs.
"""

from __future__ import annotations

from pathlib import Path

from .errors import LbtError

KINDS = ("m1", "m2-eval", "m3")


def run_kind(run_dir: str | Path) -> str:
    """``"m1"``, ``"m2-eval"`` or ``"m3"``: the kind of run `run_dir` holds (one-line `LbtError` if none)."""
    path = Path(run_dir)
    if not path.is_dir():
        raise LbtError(f"{path}: no such run directory")
    if (path / "eval_summary.json").is_file():
        return "m2-eval"
    if (path / "config.yaml").is_file():
        return "m3" if (path / "data.json").is_file() else "m1"
    raise LbtError(f"{path}: not a run directory (no config.yaml, and no eval_summary.json of `lbt m2 eval`)")


def select(run_dir: str | Path) -> tuple[str, dict]:
    """(the printed result: tables with 95% intervals and paired comparisons, the summary) recomputed from
    the run's records; nothing is written."""
    kind = run_kind(run_dir)
    if kind == "m1":
        from .m1.report import console_text, evidence
        from .m1.results import summarize

        summary = summarize(run_dir)
        summary["evidence"] = evidence(run_dir, summary)  # in memory only: a reader never writes
        return console_text(summary), summary
    if kind == "m3":
        from .m3.report import console_text, summarize

        summary = summarize(run_dir)
        return console_text(summary), summary
    from .m2.evaluate import console_text, summarize_eval_dir

    summary = summarize_eval_dir(run_dir)
    return console_text(summary), summary


def report(run_dir: str | Path, **m1_options) -> tuple[str, Path]:
    """(the printed result, report.md's path) after (re)writing the run's report; `m1_options` (a6_pairs,
    a6_subsets) apply to M1 runs only."""
    kind = run_kind(run_dir)
    if m1_options and any(v is not None for v in m1_options.values()) and kind != "m1":
        raise LbtError(f"{run_dir}: --a6-pairs / --a6-subsets apply to M1 runs, this is an {kind} run")
    if kind == "m1":
        from .m1.report import console_text, write_report
        from .m1.results import summarize

        summary = summarize(run_dir)
        path = write_report(run_dir, summary, **m1_options)  # adds the evidence the printed tables show
        return console_text(summary), path
    table, summary = select(run_dir)
    if kind == "m3":
        from .m3.report import write_report

        return table, write_report(run_dir, summary)
    from .m2.evaluate import write_eval_report

    return table, write_eval_report(run_dir, summary)
