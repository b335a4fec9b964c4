"""One count of LM calls for every command: how many were made, failed or answered from the cache, by kind.

Thread-safe (calls finish on worker threads). `lbt m2 eval` counts with it; M1's `runner.Recorder` and
M3's optimizer keep their own counts today (see the report of issue 15) and can move onto it as they are.

Example:
    >>> calls = CallCounter()
    >>> calls.add("greedy (base)", 3); calls.add("greedy (base)", failed=True, error="timeout")
    >>> calls.total, calls.failed, calls.snapshot()["by_kind"]
    (4, 1, {'greedy (base)': 4})
"""

from __future__ import annotations

import threading
from collections import Counter


class CallCounter:
    """Counts of LM calls by kind (``teach``, ``exam``, ``greedy (base)``...), with the first few errors.

    Args:
        max_errors: Error messages kept (the first ones; a rerun's one-line report quotes one).
    """

    def __init__(self, max_errors: int = 5):
        self._lock = threading.Lock()
        self.by_kind: Counter = Counter()
        self.failed = 0
        self.cached = 0
        self.errors: list[str] = []
        self.max_errors = max_errors

    def add(self, kind: str, n: int = 1, *, failed: int = 0, cached: int = 0, error: str | None = None) -> None:
        """Count `n` calls of `kind`, `failed` and `cached` of them (a bool counts as 0 or 1)."""
        with self._lock:
            self.by_kind[kind] += n
            self.failed += int(failed)
            self.cached += int(cached)
            if error and len(self.errors) < self.max_errors:
                self.errors.append(error[:500])

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_kind.values())

    def snapshot(self) -> dict:
        """``{"total", "failed", "cached", "by_kind": {...}, "errors": [...]}``, a copy."""
        with self._lock:
            return {"total": sum(self.by_kind.values()), "failed": self.failed, "cached": self.cached,
                    "by_kind": dict(self.by_kind), "errors": list(self.errors)}


def calls_line(snapshot: dict) -> str:
    """``LM calls this run: N (kind a, kind b; F failed)`` for the terminal, from `CallCounter.snapshot()`.

    Example:
        >>> calls_line({"total": 3, "failed": 1, "cached": 0, "by_kind": {"greedy (base)": 3}, "errors": []})
        'LM calls this run: 3 (greedy (base) 3; 1 failed)'
    """
    parts = ", ".join(f"{k} {v}" for k, v in snapshot["by_kind"].items())
    failed = f"; {snapshot['failed']} failed" if snapshot["failed"] else ""
    return f"LM calls this run: {snapshot['total']}" + (f" ({parts}{failed})" if parts else "")
