"""The run directory: append-only JSONL records, so an interrupted run resumes where it stopped.

Every finished generation is one JSON line, written with a single ``write`` and flushed. A line torn
by a kill is detected and dropped on the next load. Summaries are written to a temporary name and
renamed, so a reader never sees half a file. A directory holding a different run's config is refused.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import yaml

from .config import redact
from .errors import LbtError

# Config keys that do not change results: a rerun may change them.
_EXECUTION_KEYS = {"concurrency", "num_retries", "cache", "subsample_sizes", "subsample_repeats", "description"}


class RunStore:
    """A resumable run directory.

    Args:
        path: The directory (created if missing).
        config: The run's config; saved (secrets redacted) on first use and compared on reruns.

    Example:
        >>> store = RunStore("/tmp/run", {"num_rationales": 2})  # doctest: +SKIP
        >>> store.append("teach", {"key": "tp0/0", "answer": "4"})  # doctest: +SKIP
        >>> store.load("teach")["tp0/0"]["answer"]  # doctest: +SKIP
        '4'
    """

    def __init__(self, path: str | Path, config: dict | None = None):
        self.path = Path(path)
        if self.path.exists() and not self.path.is_dir():
            raise LbtError(f"{self.path}: output path exists and is not a directory")
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._files: dict[str, object] = {}
        if config is not None:
            self._check_config(redact(config))

    def _check_config(self, config: dict) -> None:
        saved_path = self.path / "config.yaml"
        if saved_path.exists():
            saved = yaml.safe_load(saved_path.read_text()) or {}
            for key in sorted(set(saved) | set(config)):
                if key in _EXECUTION_KEYS:
                    continue
                if saved.get(key) != config.get(key):
                    raise LbtError(f"{self.path}: holds a different run (config key {key!r} differs); "
                                   "use another --output-path")
        self.write_text("config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    # --- records ---------------------------------------------------------------------------------
    def load(self, stage: str) -> dict[str, dict]:
        """Records of a stage by key; a torn last line (from a kill) is dropped and cut off the file."""
        file = self.path / f"{stage}.jsonl"
        if not file.exists():
            return {}
        records: dict[str, dict] = {}
        good_bytes = 0
        with open(file, "rb") as fh:
            for raw in fh:
                if not raw.endswith(b"\n"):
                    break  # torn by a kill mid-write
                try:
                    rec = json.loads(raw)
                except json.JSONDecodeError:
                    break
                records[rec["key"]] = rec
                good_bytes += len(raw)
        if good_bytes != file.stat().st_size:
            with open(file, "r+b") as fh:
                fh.truncate(good_bytes)
        return records

    def append(self, stage: str, record: dict) -> None:
        """Append one finished record (must carry a unique ``key``)."""
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock:
            fh = self._files.get(stage)
            if fh is None:
                fh = self._files[stage] = open(self.path / f"{stage}.jsonl", "a", encoding="utf-8")
            fh.write(line)
            fh.flush()

    def close(self) -> None:
        with self._lock:
            for fh in self._files.values():
                fh.close()
            self._files.clear()

    # --- summaries -------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        target = self.path / name
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, target)
        return target

    def write_json(self, name: str, obj) -> Path:
        return self.write_text(name, json.dumps(obj, indent=1, ensure_ascii=False))

    def read_config(self) -> dict:
        file = self.path / "config.yaml"
        if not file.exists():
            raise LbtError(f"{self.path}: not a run directory (no config.yaml)")
        return yaml.safe_load(file.read_text()) or {}
