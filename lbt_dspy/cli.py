"""The `lbt` command: exam, m1, select, report, serve."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

from .errors import LbtError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="lbt", description="Learning by teaching (LbT) with DSPy.")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error (also: LBT_DEBUG=1)")
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("exam", help="students take exams taught by teaching_plans (the seed's scripts/exam.py)")
    e.add_argument("cfg_file")
    e.add_argument("--output-path", required=True)
    e.add_argument("--teaching-dataset-file")
    e.add_argument("--exam-dataset-file", required=True)

    m = sub.add_parser("m1", help="teacher rationales -> exams -> selection -> report, in one resumable command")
    m.add_argument("cfg_file")
    m.add_argument("--output-path", help="run directory (default: runs/<config name>)")

    s = sub.add_parser("select", help="recompute a run directory's results (M1 picks, M2 eval or M3 F1); print the "
                                      "table")
    s.add_argument("run_dir")
    s.add_argument("-o", "--output", help="also write the per-problem picks as JSON to this file (outside the run)")
    r = sub.add_parser("report", help="write report.md and PNGs of a run directory (M1, M2 eval or M3)")
    r.add_argument("run_dir")
    r.add_argument("--a6-pairs", type=int, help="Table A6: M1 with this many pairs vs SC with all (default: the "
                   "config's a6_pairs, 24); emitted when the run has more pairs")
    r.add_argument("--a6-subsets", type=int, help="Table A6: random subsets of pairs (default: a6_subsets, 10)")

    v = sub.add_parser("serve", help="serve the embedded model over the OpenAI API until interrupted")
    v.add_argument("--port", type=int)
    v.add_argument("--checkpoint", help="model directory (default: the embedded SmolLM2)")
    v.add_argument("--server", choices=["vllm", "transformers"], default="vllm",
                   help="vllm (the engine) or transformers (the fallback for a platform with no vLLM wheel)")
    from .cli_flags import add_config_flags, add_quiet_flag

    for sp in (e, m):  # the commands that read a config: CFG [--set KEY=VALUE ...] [-q]
        add_config_flags(sp)
    for sp in (s, r, v):
        add_quiet_flag(sp)

    from .m2.cli import add_m2_parser

    add_m2_parser(sub)  # lbt m2 pairs | train | eval
    from .m3.cli import add_m3_parser

    add_m3_parser(sub)  # lbt m3 CFG
    return p


def main(argv: list[str] | None = None) -> int:
    """Run one ``lbt`` command. Every input or environment fault ends as one line on stderr and an exit
    code (2: input, 1: environment, 130: interrupted); ``--debug`` (anywhere on the line, or ``LBT_DEBUG=1``)
    also prints the traceback."""
    owns_process = argv is None  # the `lbt` script (or python -m): this call's exit is the process's
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get("LBT_DEBUG") == "1"
    argv = [a for a in argv if a != "--debug"]
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="lbt: %(levelname)s: %(message)s")
    # A truncated answer is normal for small max_tokens; it is scored like any other.
    logging.getLogger("dspy.clients.lm").setLevel(logging.ERROR)
    # math-verify warns on every call made off the main thread (its signal timeout cannot run there); noise.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    for stream in (sys.stdout, sys.stderr):  # a lone surrogate in a problem id must not crash a print
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors="backslashreplace")
    restore = _on_ctrl_c_exit_now(args)
    try:
        code = _run(args)
    except (KeyboardInterrupt, Exception) as exc:
        code = _one_line_error(exc, debug)
    finally:
        restore()
    if code and owns_process:
        _exit_without_waiting(code)
    return code


def _one_line_error(exc: BaseException, debug: bool) -> int:
    """Print `exc` as one ``lbt: error:`` line (and its traceback with --debug); return the exit code."""
    import traceback

    from .errors import backend_down

    if isinstance(exc, BrokenPipeError):  # `lbt select RUN | head`: the reader left; nothing to report
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):
            pass
        return 1
    if debug:
        traceback.print_exception(exc)
    down = backend_down(exc)
    if isinstance(exc, KeyboardInterrupt):
        msg, code = "interrupted; finished records are kept: rerun the same command to resume", 130
    elif isinstance(exc, LbtError):
        msg, code = str(exc), exc.exit_code
    elif down is not None:
        msg, code = str(down), down.exit_code
    elif isinstance(exc, OSError):
        from .store import os_error

        err = os_error(exc, exc.filename or "lbt", "continue")
        msg, code = str(err), err.exit_code
    elif isinstance(exc, MemoryError):
        msg, code = "out of memory; use a smaller config (fewer num_rationales, problems or concurrency)", 1
    else:  # a bug, not the user's input: still one line, the traceback on request
        msg = f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback, and report it)"
        code = 1
    print("lbt: error: " + " ".join(msg.split()), file=sys.stderr, flush=True)
    return code


def _on_ctrl_c_exit_now(args):
    """Ctrl-C during a run: one line, the run's record files closed under their locks (no line half written),
    exit 130 at once, abandoning calls in flight (a rerun resumes); a second Ctrl-C exits immediately.
    `lbt serve` and `lbt m2 train` keep Python's KeyboardInterrupt (they stop their server/trainer cleanly).
    Returns the function that puts the previous handler back."""
    import signal
    import threading

    if (args.command == "serve" or getattr(args, "m2_command", None) == "train"
            or threading.current_thread() is not threading.main_thread()):
        return lambda: None
    hits = []

    def handler(signum, frame):
        hits.append(signum)
        if len(hits) > 1:
            os._exit(130)
        try:
            print("\nlbt: interrupted; finished records are kept: rerun the same command to resume",
                  file=sys.stderr, flush=True)
            from .store import close_all_writers

            close_all_writers()
        finally:
            os._exit(130)

    previous = signal.signal(signal.SIGINT, handler)
    return lambda: signal.signal(signal.SIGINT, previous)


def _exit_without_waiting(code: int) -> None:
    """After a failed run, exit now rather than join worker threads still in a call or a retry's backoff
    (a dead server: their calls fail anyway, and nothing they do is recorded)."""
    import threading

    if any(t.is_alive() and not t.daemon for t in threading.enumerate() if t is not threading.main_thread()):
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(code)


def _run(args) -> int:
    from .config import M1Config

    if args.command == "m2":
        from .m2.cli import run_m2

        return run_m2(args)
    if args.command == "m3":
        from .m3.cli import run_m3_command

        return run_m3_command(args)
    if args.command == "serve":
        from .models import TransformersServer, VLLMServer, checkpoint_path

        ckpt = args.checkpoint or checkpoint_path()
        server = (VLLMServer(ckpt, port=args.port) if args.server == "vllm" else
                  TransformersServer(ckpt, port=args.port))
        with server:
            print(f"serving {server.model}\napi_base: {server.api_base}\n(Ctrl-C stops it)", flush=True)
            while server.proc and server.proc.poll() is None:
                time.sleep(1)
        return 0
    if args.command == "exam":
        from .exam.run import run_exam

        cfg = M1Config.from_yaml(args.cfg_file, args.set)
        out = run_exam(cfg, args.output_path, args.exam_dataset_file, args.teaching_dataset_file,
                       progress=not args.quiet)
        if out["failed"]:
            first = f" (first: {out['errors'][0]})" if out.get("errors") else ""
            print(f"lbt: {out['failed']} call(s) failed and were not recorded{first}; the output dataset is written "
                  "once every call is done: rerun the same command to retry", file=sys.stderr)
            return 1
        print(f"{out['plans']} exam(s); LM calls: {out['calls']}; written to {args.output_path} (the seed's "
              "save_to_disk dataset, dataset.csv, dataset.json; records in exam.jsonl)")
        from .model_output import output_table

        print(output_table(out["answers"]))
        return 0
    if args.command == "m1":
        from .m1 import run_m1
        from .m1.report import console_text, write_report
        from .m1.results import summarize

        cfg = M1Config.from_yaml(args.cfg_file, args.set)
        out_dir = Path(args.output_path or Path("runs") / Path(args.cfg_file).stem)
        t0 = time.monotonic()
        calls = run_m1(cfg, out_dir, progress=not args.quiet, log_dir=str(out_dir))
        wall = time.monotonic() - t0
        made = calls["greedy"] + calls["teach"] + calls["exam"]
        rate = f"; {made / calls['seconds']:.2f} calls/s once the servers were up" if calls.get("seconds") else ""
        print(f"LM calls this run: {made} (greedy {calls['greedy']}, teacher {calls['teach']}, "
              f"students {calls['exam']}); wall time {wall:.0f} s{rate}")
        from .models.vllm_server import prefix_cache_lines

        for line in prefix_cache_lines(calls.get("prefix_cache")):  # the total, then each replica
            print(line)
        if calls["failed"]:
            print(f"lbt: {calls['failed']} call(s) failed {calls['error']}; they were not recorded: "
                  "rerun the same command to retry", file=sys.stderr)
            return 1
        summary = summarize(out_dir)
        report = write_report(out_dir, summary)
        print(console_text(summary))
        print(f"report: {report}")
        return 0
    if args.command in ("select", "report"):
        from . import run_kinds

        if args.command == "report":
            for flag in ("a6_pairs", "a6_subsets"):
                if getattr(args, flag) is not None and getattr(args, flag) < 1:
                    raise LbtError(f"--{flag.replace('_', '-')} must be >= 1")
            table, path = run_kinds.report(args.run_dir, a6_pairs=args.a6_pairs, a6_subsets=args.a6_subsets)
            print(f"report: {path}")
        else:
            table, summary = run_kinds.select(args.run_dir)
            if args.output:  # a reader never writes into the run: the results go where the user says
                _write_selection(args.output, args.run_dir, summary.get("problems", summary))
        print(table, end="" if table.endswith("\n") else "\n")
        return 0
    return 2


def _write_selection(output: str, run_dir: str, problems) -> None:
    import json

    out, run = Path(output).resolve(), Path(run_dir).resolve()
    if run == out or run in out.parents:
        raise LbtError(f"{output}: inside the run directory {run_dir}; lbt select does not write into a run")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
        tmp.write_text(json.dumps(problems, indent=1, ensure_ascii=True), encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        from .store import os_error

        raise os_error(exc, out) from None
    print(f"picks: {out}")


if __name__ == "__main__":
    sys.exit(main())
