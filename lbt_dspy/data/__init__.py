"""Datasets (`dataset_type` / `dataset_cfg`): teaching problems and the exam bank they draw from."""

from __future__ import annotations

from pathlib import Path

from ..errors import LbtError
from . import code as _code  # noqa: F401  (registers humaneval, leetcode)
from .arith import make_families
from .base import DATA_DIR, TaskData, datasets
from .jsonl import normalize_fields, read_jsonl


def _limit(rows: list[dict], limit: int | None) -> list[dict]:
    return rows if limit is None else rows[:limit]


@datasets.register("arith")
def arith_dataset(num_families: int = 24, num_variants: int = 3, seed: int = 0, ops: list | None = None) -> TaskData:
    """Seeded one-step arithmetic word problems (see `lbt_dspy.data.arith`)."""
    tps, bank = make_families(num_families, num_variants, seed, tuple(ops or ("add", "sub", "mul")))
    return TaskData(tps, bank)


@datasets.register("math181")
def math181_dataset(path: str | None = None, limit: int | None = None) -> TaskData:
    """The paper's 181 MATH problems with their 3 MATH() variants each (``data/math181``)."""
    root = Path(path) if path else DATA_DIR / "math181"
    tps = read_jsonl(root / "teaching_problems.jsonl", required=("unique_id", "problem", "answer"))
    eps = read_jsonl(root / "exam_problems.jsonl", required=("unique_id", "problem", "answer"))
    for row in tps + eps:
        normalize_fields(row)
        if "type" in row and "subject" not in row:
            row["subject"] = row.pop("type")
    tps = _limit(tps, limit)
    keep = {t["unique_id"] for t in tps}
    return TaskData(tps, [e for e in eps if e["unique_id"] in keep])


@datasets.register("jsonl")
def jsonl_dataset(teaching_file: str, exam_file: str | None = None, limit: int | None = None) -> TaskData:
    """Your own JSONL files: rows with ``question`` (or ``problem``) and ``answer``; ``unique_id`` links
    a teaching problem to its exam problems. Without `exam_file` the teaching file is the bank too."""
    def load(p):
        rows = read_jsonl(p)
        for n, row in enumerate(rows, 1):
            normalize_fields(row)
            if "question" not in row or "answer" not in row:
                raise LbtError(f"{p}:{n}: a row needs 'question' and 'answer'")
        return rows
    tps = _limit(load(teaching_file), limit)
    return TaskData(tps, load(exam_file) if exam_file else tps)


__all__ = ["TaskData", "datasets", "read_jsonl", "make_families", "DATA_DIR"]
