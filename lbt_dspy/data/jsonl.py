"""JSONL reading with errors that name the file and line."""

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
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
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
