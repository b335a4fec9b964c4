"""Binary ``{label, text}`` JSONL tasks: liar, fallacy (``data/``) or any pair of JSONL files.

Rows are ``{"label": 0|1 (or "Yes"/"No"), "text": str}``; label 1 is the positive class ("Yes"). The question
is what the classifier is asked; each task has a default that the config's ``question`` overrides.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import dspy

from ..data import DATA_DIR
from ..data.jsonl import read_jsonl
from ..errors import LbtError
from ..registry import did_you_mean
from .fields import TEXT_LABEL

#: The patch's ``prompts/liar.md`` question (positive = label 1 = the HF `liar` "false" class).
LIAR_QUESTION = ("Determine whether the Statement is a lie (Yes) or not (No) based on the Context and other "
                 "information.")
#: data/fallacy is BIG-bench logical_fallacy_detection (label 1 = the argument is invalid), not the paper's
#: "faulty generalization" subset of tasksource/logical-fallacy, so the question differs from the patch's.
FALLACY_QUESTION = "Does this argument contain a logical fallacy, i.e. is its conclusion invalid (Yes) or valid (No)?"

TASKS = {"liar": LIAR_QUESTION, "fallacy": FALLACY_QUESTION}


@dataclass(frozen=True)
class BinaryTask:
    """A Yes/No task: the question and the train/test examples (``dspy.Example(text, label)``)."""

    name: str
    question: str
    train: list[dspy.Example]
    test: list[dspy.Example]


def load_task(name: str, question: str | None = None, data_dir: str | Path | None = None,
              train_file: str | Path | None = None, test_file: str | Path | None = None) -> BinaryTask:
    """Load ``liar``, ``fallacy`` (from ``data/<name>/{train,test}.jsonl``) or ``jsonl`` (explicit files).

    Args:
        name: ``liar``, ``fallacy`` or ``jsonl``.
        question: The classifier's question (required for ``jsonl``; overrides the built-in one otherwise).
        data_dir: A directory holding ``train.jsonl`` and ``test.jsonl`` (default ``data/<name>``).
        train_file, test_file: Explicit files (``jsonl``; they override ``data_dir``).

    Example:
        >>> task = load_task("liar")  # doctest: +SKIP
        >>> task.train[0].label, len(task.test)  # doctest: +SKIP
        ('Yes', 461)
    """
    if name not in (*TASKS, "jsonl"):
        raise LbtError(f"task: unknown task {name!r}{did_you_mean(name, [*TASKS, 'jsonl'])}; "
                       "known: liar, fallacy, jsonl")
    if name == "jsonl":
        if not question:
            raise LbtError("question: a jsonl task needs the classifier's question")
        if not (train_file and test_file) and not data_dir:
            raise LbtError("dataset_cfg: a jsonl dataset needs train_file and test_file (or data_dir)")
    root = Path(data_dir) if data_dir else DATA_DIR / name
    train_path = Path(train_file) if train_file else root / "train.jsonl"
    test_path = Path(test_file) if test_file else root / "test.jsonl"
    train, test = _read(train_path), _read(test_path)
    return BinaryTask(name, question or TASKS[name], train, test)


def _read(path: Path) -> list[dspy.Example]:
    rows = read_jsonl(path, required=("label", "text"))
    for n, row in enumerate(rows, 1):
        if not isinstance(row["text"], str) or not row["text"].strip():
            raise LbtError(f"{path}: row {n}: text must be a non-empty string")
        if row["label"] not in (0, 1, True, False, "Yes", "No", "yes", "no", "0", "1"):
            raise LbtError(f"{path}: row {n}: label must be 0/1 or Yes/No, got {row['label']!r}")
    return [TEXT_LABEL.example(r) for r in rows]
