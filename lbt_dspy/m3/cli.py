"""`lbt m3 CFG [--output-path DIR]` and `lbt m3 --report DIR`: the subcommand, delegated to from lbt_dspy.cli."""

from __future__ import annotations

import sys
from pathlib import Path


def add_m3_parser(sub) -> None:
    p = sub.add_parser("m3", help="LbT for in-context examples (the paper's M3): optimise K examples of a Yes/No "
                                  "classifier with a teacher and students; F1 per round, baselines, report")
    p.add_argument("cfg_file", nargs="?", help="the run's YAML config (see configs/m3_liar.yaml)")
    p.add_argument("--output-path", help="run directory (default: runs/<config name>)")
    p.add_argument("--report", metavar="RUN_DIR", help="only (re)write report.md and PNGs of a run directory")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def run_m3_command(args) -> int:
    from ..errors import LbtError
    from .config import M3Config
    from .report import f1_table, summarize, write_report
    from .run import run_m3

    if args.report:
        s = summarize(args.report)
        print(f1_table(s), end="")
        print(f"report: {write_report(args.report, s)}")
        return 0
    if not args.cfg_file:
        raise LbtError("m3: give a config file (or --report RUN_DIR)")
    cfg = M3Config.from_yaml(args.cfg_file)
    out_dir = Path(args.output_path or Path("runs") / Path(args.cfg_file).stem)
    calls = run_m3(cfg, out_dir, progress=not args.quiet, log_dir=str(out_dir))
    s = summarize(out_dir)
    report = write_report(out_dir, s)
    print(f1_table(s), end="")
    print(f"LM calls this run: {calls['optimize'] + calls['eval']} (optimizer {calls['optimize']}, "
          f"test evaluation {calls['eval']}; {calls['cached']} answered by DSPy's cache); "
          f"wall time {calls['seconds']:.0f} s")
    print(f"report: {report}")
    if calls["failed"]:
        print(f"lbt: {calls['failed']} call(s) failed (left out of scores); rerun the same command to retry",
              file=sys.stderr)
        return 1
    return 0
