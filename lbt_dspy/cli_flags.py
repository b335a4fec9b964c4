"""The flags every `lbt` command shares, so the grammar is one: ``CFG [--set KEY=VALUE ...] [-q]``.

``--set`` values are YAML; a dotted key reaches into a mapping (``--set dataset_cfg.num_families=4``);
`lbt_dspy.config.apply_sets` applies them to the config file's mapping before it is checked.
"""

from __future__ import annotations

import argparse


def add_quiet_flag(parser: argparse.ArgumentParser) -> None:
    """``-q`` / ``--quiet``: no progress bars."""
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    """``--set KEY=VALUE`` (repeatable) and ``-q`` for a command that reads a config file."""
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key (a YAML value; dotted keys reach nested ones, "
                             "e.g. dataset_cfg.num_families=4)")
    add_quiet_flag(parser)
