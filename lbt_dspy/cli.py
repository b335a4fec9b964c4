"""The `lbt` command: exam, m1, select, report, serve."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .errors import LbtError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lbt", description="Learning by teaching (LbT) with DSPy.")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("exam", help="students take exams taught by teaching_plans (the seed's scripts/exam.py)")
    e.add_argument("cfg_file")
    e.add_argument("--output-path", required=True)
    e.add_argument("--teaching-dataset-file")
    e.add_argument("--exam-dataset-file", required=True)

    m = sub.add_parser("m1", help="teacher rationales -> exams -> selection -> report, in one resumable command")
    m.add_argument("cfg_file")
    m.add_argument("--output-path", help="run directory (default: runs/<config name>)")

    s = sub.add_parser("select", help="recompute LbT scores and M1 picks of a run directory; print the table")
    s.add_argument("run_dir")
    r = sub.add_parser("report", help="write report.md and PNGs of a run directory")
    r.add_argument("run_dir")

    v = sub.add_parser("serve", help="serve the embedded model over the OpenAI API until interrupted")
    v.add_argument("--port", type=int)
    v.add_argument("--checkpoint", help="model directory (default: the embedded SmolLM2)")
    v.add_argument("--no-continuous-batching", action="store_true")
    for sp in (e, m, s, r, v):
        sp.add_argument("-q", "--quiet", action="store_true", help="no progress bars")

    from .m2.cli import add_m2_parser

    add_m2_parser(sub)  # lbt m2 pairs | train | eval
    from .m3.cli import add_m3_parser

    add_m3_parser(sub)  # lbt m3 CFG
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="lbt: %(levelname)s: %(message)s")
    # A truncated answer is normal for small max_tokens; it is scored like any other.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    try:
        return _run(args)
    except LbtError as exc:
        print(f"lbt: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lbt: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130


def _run(args) -> int:
    from .config import LbtConfig

    if args.command == "m2":
        from .m2.cli import run_m2

        return run_m2(args)
    if args.command == "m3":
        from .m3.cli import run_m3_command

        return run_m3_command(args)
    if args.command == "serve":
        from .models.embedded import EmbeddedServer

        server = EmbeddedServer(args.checkpoint, port=args.port, continuous_batching=not args.no_continuous_batching)
        with server:
            print(f"serving {server.model}\napi_base: {server.api_base}\n(Ctrl-C stops it)", flush=True)
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
        return 0
    if args.command == "exam":
        from .exam.run import run_exam

        cfg = LbtConfig.from_yaml(args.cfg_file)
        out = run_exam(cfg, args.output_path, args.exam_dataset_file, args.teaching_dataset_file,
                       progress=not args.quiet)
        print(f"{out['plans']} exam(s); LM calls: {out['calls']}; written to {args.output_path}/dataset.jsonl")
        if out["failed"]:
            print(f"lbt: {out['failed']} call(s) failed and were not recorded; rerun to retry", file=sys.stderr)
            return 1
        return 0
    if args.command == "m1":
        from .m1 import run_m1
        from .m1.report import accuracy_table, write_report
        from .m1.results import summarize

        cfg = LbtConfig.from_yaml(args.cfg_file)
        out_dir = Path(args.output_path or Path("runs") / Path(args.cfg_file).stem)
        t0 = time.monotonic()
        calls = run_m1(cfg, out_dir, progress=not args.quiet, log_dir=str(out_dir))
        wall = time.monotonic() - t0
        made = calls["greedy"] + calls["teach"] + calls["exam"]
        print(f"LM calls this run: {made} (greedy {calls['greedy']}, teacher {calls['teach']}, "
              f"students {calls['exam']}); wall time {wall:.0f} s")
        if calls["failed"]:
            print(f"lbt: {calls['failed']} call(s) failed {calls['error']}; they were not recorded: "
                  "rerun the same command to retry", file=sys.stderr)
            return 1
        summary = summarize(out_dir)
        report = write_report(out_dir, summary)
        print(accuracy_table(summary))
        print(f"report: {report}")
        return 0
    if args.command in ("select", "report"):
        from .m1.report import accuracy_table, write_report
        from .m1.results import summarize

        summary = summarize(args.run_dir)
        if args.command == "report":
            print(f"report: {write_report(args.run_dir, summary)}")
        else:
            from .store import RunStore

            RunStore(args.run_dir).write_json("selection.json", summary["problems"])
        print(accuracy_table(summary))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
