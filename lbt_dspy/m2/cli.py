"""`lbt m2 pairs | train | eval`: the M2 commands, hooked into `lbt` by `add_m2_parser` / `run_m2`."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from ..errors import LbtError


def _add_dataclass_args(parser: argparse.ArgumentParser, cls) -> None:
    """One ``--field-name`` flag per dataclass field, its help text and default from the field."""
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata.get("help", "")
        if f.type in (bool, "bool"):
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, default=f.default,
                                help=help_text)
        else:
            typ = {"float": float, "int": int, "str": str}.get(str(f.type), str)
            parser.add_argument(flag, dest=f.name, type=typ, default=f.default, help=help_text)


def _train_keys() -> str:
    """The help epilog of `lbt m2 train`: the LbT keys with their help, then where the rest come from."""
    import textwrap

    from .train_config import M2ModelConfig, M2TrainConfig

    lines = ["config keys (YAML; --set KEY=VALUE overrides): every trl.DPOConfig and trl.ModelConfig field, and:"]
    for cls in (M2TrainConfig, M2ModelConfig):
        for f in dataclasses.fields(cls):
            if f.name not in cls.__annotations__:
                continue  # TRL's own field, documented by TRL
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            lines.append(f"  {f.name} (default {default!r})")
            lines += textwrap.wrap(f.metadata.get("help", ""), 96, initial_indent=" " * 6, subsequent_indent=" " * 6)
    return "\n".join(lines)


class _LazyEpilogParser(argparse.ArgumentParser):
    """An ArgumentParser whose epilog is made when help is shown: listing the train keys imports trl (seconds),
    which no other `lbt` command should pay for."""

    def __init__(self, *args, epilog_factory=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.epilog_factory = epilog_factory

    def format_help(self):
        if self.epilog_factory is not None:
            self.epilog = self.epilog_factory()
        return super().format_help()


def add_m2_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``m2`` with its ``pairs``, ``train`` and ``eval`` subcommands to `lbt`'s subparsers."""
    from .pairs import PairConfig

    m2 = subparsers.add_parser("m2", help="M2: LbT-scored DPO of the teacher (pairs -> train -> eval)")
    sub = m2.add_subparsers(dest="m2_command", required=True, parser_class=_LazyEpilogParser)

    p = sub.add_parser("pairs", help="M1 run directories -> preference pairs (a datasets dataset + JSONL)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="`lbt m1` output directories")
    p.add_argument("--output-path", required=True, help="directory for pairs.jsonl, dataset/, pairs_summary.json")
    _add_dataclass_args(p, PairConfig)

    t = sub.add_parser("train", help="DPO (TRL DPOTrainer, optional LoRA) on the pairs; saves adapter/ and merged/",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog_factory=_train_keys)
    t.add_argument("cfg_file", help="a train config YAML (see configs/m2_demo_train.yaml)")
    t.add_argument("--pairs", help="override the config's pairs")
    t.add_argument("--output-dir", help="override the config's output_dir")

    e = sub.add_parser("eval", help="greedy accuracy of base vs tuned teachers on held-out problems, one report")
    e.add_argument("cfg_file", help="an `lbt` config: dataset, prompt format, scorer, teacher_model_cfg (the base)")
    e.add_argument("--model", action="append", default=[], metavar="NAME=PATH",
                   help="a tuned model: a checkpoint dir or a `lbt m2 train` output dir (repeatable)")
    e.add_argument("--no-base", action="store_true", help="leave out the base model")
    e.add_argument("--split", default="teaching", choices=("teaching", "bank", "all"),
                   help="which problems of the config's dataset: teaching problems, exam bank, or both")
    e.add_argument("--limit", type=int, help="only the first N problems")
    e.add_argument("--output-path", required=True, help="directory for per-model records and report.md")
    from ..cli_flags import add_config_flags, add_quiet_flag

    add_config_flags(t)
    add_config_flags(e)
    add_quiet_flag(p)
    return m2


def run_m2(args) -> int:
    """Run the parsed ``lbt m2 ...`` command; returns the exit code."""
    if args.m2_command == "pairs":
        return _pairs(args)
    if args.m2_command == "train":
        return _train(args)
    if args.m2_command == "eval":
        return _eval(args)
    return 2


def _pairs(args) -> int:
    from .pairs import PairConfig, build_pairs, check_pairs_output, save_pairs

    cfg = PairConfig(**{f.name: getattr(args, f.name) for f in dataclasses.fields(PairConfig)})
    check_pairs_output(Path(args.output_path))  # before any work
    records, summary = build_pairs(args.run_dirs, cfg)
    out = save_pairs(records, summary, args.output_path)
    wc, wl = cfg.weights()
    print(f"score = {wc:g} x correctness + {wl:g} x LbT; pairs where the scores differ by > {cfg.threshold:g}, "
          f"at most {cfg.max_pairs_per_problem or 'all'} per problem ({cfg.selection})")
    print(f"{summary['problems']} problem(s), {summary['samples']} sample(s)"
          + (f" ({summary['samples_dropped_no_exam']} without exam records, dropped)"
             if summary["samples_dropped_no_exam"] else "")
          + f"; {summary['qualifying_pairs']} qualifying pair(s); kept {summary['pairs']} from "
          f"{summary['problems_with_pairs']} problem(s)")
    print(f"written to {out}/ (pairs.jsonl, pairs_summary.json" + (", dataset/)" if records else ")"))
    if not records:
        print("lbt: no pairs qualified; lower --threshold or use more samples per problem", file=sys.stderr)
        return 1
    return 0


def _train(args) -> int:
    from ..config import parse_sets
    from .train import format_summary, train
    from .train_config import load_train_config

    sets = parse_sets(args.set)
    for key, flag in (("pairs", args.pairs), ("output_dir", args.output_dir), ("disable_tqdm", args.quiet or None)):
        if flag is not None:
            sets[key] = flag
    cfg, model_cfg = load_train_config(args.cfg_file, sets)
    summary = train(cfg, model_cfg)
    print(format_summary(summary))
    print(f"summary: {Path(cfg.output_dir) / 'train_summary.json'}")
    return 0


def _eval(args) -> int:
    from ..config import M1Config
    from ..counting import calls_line
    from .evaluate import console_text, run_eval

    cfg = M1Config.from_yaml(args.cfg_file, args.set)
    models = []
    for item in args.model:
        name, sep, p = item.partition("=")
        if not sep or not name or not p:
            raise LbtError(f"--model {item!r}: expected NAME=PATH")
        models.append((name, p))
    summary = run_eval(cfg, models, args.output_path, include_base=not args.no_base, split=args.split,
                       limit=args.limit, progress=not args.quiet)
    print(console_text(summary))
    print(calls_line(summary["calls"]))
    print(f"report: {Path(args.output_path) / 'report.md'}")
    if summary["failed_calls"]:
        print(f"lbt: {summary['failed_calls']} call(s) failed; rerun the same command to retry", file=sys.stderr)
        return 1
    return 0
