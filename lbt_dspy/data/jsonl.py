"""JSONL reading with errors that name the file and line, and the one renaming of the seed's field names."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import LbtError


def read_jsonl(path: str | Path, required: tuple[str, ...] = ()) -> list[dict]:
    """Read a JSONL file; a bad line raises `LbtError` naming ``file:line``.

    Args:
        path: The file.
        required: Keys every row must have.
    """
    path = Path(path)
    if not path.is_file():
        raise LbtError(f"{path}: no such file")
    rows = []
    with open(path, encoding="utf-8", errors="surrogateescape") as fh:  # bad bytes: named below, not a crash
        for lineno, line in enumerate(fh, 1):
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:
                raise LbtError(f"{path}:{lineno}: not UTF-8 text") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LbtError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise LbtError(f"{path}:{lineno}: expected a JSON object")
            missing = [k for k in required if k not in row]
            if missing:
                raise LbtError(f"{path}:{lineno}: missing key(s) {', '.join(missing)}")
            rows.append(row)
    if not rows:
        raise LbtError(f"{path}: empty dataset")
    return rows


# The seed's column names and lbt's (exam.py: problem/solution; code_exam.py: prompt/canonical_solution).
SEED_FIELDS = (("problem", "question"), ("solution", "rationale"), ("canonical_solution", "answer"),
               ("prompt", "question"))


def normalize_fields(row: dict) -> dict:
    """`row` with the seed's field names under lbt's (``problem``/``prompt`` -> ``question``, ``solution`` ->
    ``rationale``, ``canonical_solution`` -> ``answer``), each only where lbt's name is absent; in place.

    Example:
        >>> normalize_fields({"problem": "1+1?", "solution": "2", "answer": "2"})
        {'answer': '2', 'question': '1+1?', 'rationale': '2'}
    """
    for old, new in SEED_FIELDS:
        if new not in row and old in row:
            row[new] = row.pop(old)
    return row
