"""`lbt m3 CFG [--output-path DIR]` and `lbt m3 --report DIR`: the subcommand, delegated to from lbt_dspy.cli."""

from __future__ import annotations

import sys
from pathlib import Path


def add_m3_parser(sub) -> None:
    p = sub.add_parser("m3", help="LbT for in-context examples (the paper's M3): optimise K examples of the Yes/No "
                                  "classifier of a task with a teacher and students; F1 per round, baselines, "
                                  "report (any DSPy program: lbt_dspy.m3.LbTOptimizer)")
    p.add_argument("cfg_file", nargs="?", help="the run's YAML config (see configs/m3_liar.yaml)")
    p.add_argument("--output-path", help="run directory (default: runs/<config name>)")
    p.add_argument("--report", metavar="RUN_DIR", help="the same as `lbt report RUN_DIR` (kept for old scripts)")
    from ..cli_flags import add_config_flags

    add_config_flags(p)  # --set KEY=VALUE, -q


def run_m3_command(args) -> int:
    from ..errors import LbtError
    from .config import M3Config
    from .report import console_text, summarize, write_report
    from .run import run_m3

    if args.report:
        from ..run_kinds import report

        table, path = report(args.report)
        print(table, end="")
        print(f"report: {path}")
        return 0
    if not args.cfg_file:
        raise LbtError("m3: give a config file (or --report RUN_DIR)")
    from ..config import apply_sets, load_yaml

    cfg = M3Config.from_dict(apply_sets(load_yaml(args.cfg_file), args.set), args.cfg_file)
    out_dir = Path(args.output_path or Path("runs") / Path(args.cfg_file).stem)
    calls = run_m3(cfg, out_dir, progress=not args.quiet, log_dir=str(out_dir))
    s = summarize(out_dir)
    report = write_report(out_dir, s)
    print(console_text(s), end="")
    print(f"LM calls this run: {calls['optimize'] + calls['eval']} (optimizer {calls['optimize']}, "
          f"test evaluation {calls['eval']}; {calls['cached']} more answered by the run's records or DSPy's "
          f"cache); wall time {calls['seconds']:.0f} s")
    print(f"report: {report}")
    if calls["failed"]:
        print(f"lbt: {calls['failed']} call(s) failed (left out of scores); rerun the same command to retry",
              file=sys.stderr)
        return 1
    return 0
