"""The one count of LM calls, for every command: how many were made, failed or answered from the cache, by
kind (``teach``, ``exam``, ``greedy (base)``, M3's roles...), and how many answers were unparsed, cut off or
empty (still answers: `lbt_dspy.model_output`).

`CallCounter` is thread-safe (calls finish on worker threads). `lbt m1`'s recorder, `lbt m2 eval` and M3's
`LbTOptimizer` count with it; `CountingCallback` feeds it from DSPy's callbacks, for code that counts
every LM call of a program it does not own (`eval/bench_m3.py`: every optimiser's budget).

Example:
    >>> calls = CallCounter()
    >>> calls.add("greedy (base)", 3); calls.add("greedy (base)", failed=True, error="timeout")
    >>> calls.total, calls.failed, calls.snapshot()["by_kind"]
    (4, 1, {'greedy (base)': 4})
"""

from __future__ import annotations

import threading
from collections import Counter

from dspy.utils.callback import BaseCallback


class CallCounter:
    """Counts of LM calls by kind, the failed and cached ones, the answers' flags, and the first few errors.

    Args:
        max_errors: Error messages kept (the first ones; a rerun's one-line report quotes one).
    """

    def __init__(self, max_errors: int = 5):
        self._lock = threading.Lock()
        self.by_kind: Counter = Counter()
        self.failed_by_kind: Counter = Counter()
        self.cached = 0
        self.answers: Counter = Counter()  # unparsed, cut_off, empty
        self.errors: list[str] = []
        self.max_errors = max_errors

    def add(self, kind: str, n: int = 1, *, failed: int = 0, cached: int = 0, error: str | None = None,
            pred=None) -> None:
        """Count `n` calls of `kind`, `failed` and `cached` of them (a bool counts as 0 or 1); `pred`, the
        answer of one call, says whether it was unparsed, cut off or empty."""
        with self._lock:
            self.by_kind[kind] += n
            if failed:
                self.failed_by_kind[kind] += int(failed)
            self.cached += int(cached)
            if pred is not None:
                text = pred.get("completion")
                self.answers["unparsed"] += bool(pred.get("unparsed"))
                self.answers["cut_off"] += bool(pred.get("cut_off"))
                self.answers["empty"] += isinstance(text, str) and not text.strip()
            if error and len(self.errors) < self.max_errors:
                self.errors.append(error[:500])

    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.by_kind.values())

    @property
    def failed(self) -> int:
        with self._lock:
            return sum(self.failed_by_kind.values())

    def of(self, kind: str) -> int:
        """Calls of `kind` (made and failed)."""
        with self._lock:
            return self.by_kind.get(kind, 0)

    def failed_of(self, kind: str) -> int:
        with self._lock:
            return self.failed_by_kind.get(kind, 0)

    def snapshot(self) -> dict:
        """``{"total", "failed", "cached", "by_kind": {...}, "unparsed", "cut_off", "empty", "errors": [...]}``,
        a copy."""
        with self._lock:
            return {"total": sum(self.by_kind.values()), "failed": sum(self.failed_by_kind.values()),
                    "cached": self.cached, "by_kind": dict(self.by_kind),
                    **{k: self.answers.get(k, 0) for k in ("unparsed", "cut_off", "empty")},
                    "errors": list(self.errors)}


class CountingCallback(BaseCallback):
    """A DSPy callback that counts every LM call (all LMs, all threads) in one `CallCounter`, by the LM's
    name (``lbt_name`` or model).

    Example:
        >>> counter = CountingCallback()
        >>> with dspy.context(callbacks=[counter]):  # doctest: +SKIP
        ...     optimizer.compile(program, trainset=train)
        >>> counter.n  # doctest: +SKIP
    """

    def __init__(self, calls: CallCounter | None = None):
        self.calls = calls or CallCounter()

    @property
    def n(self) -> int:
        return self.calls.total

    def on_lm_start(self, call_id, instance, inputs):
        self.calls.add(getattr(instance, "lbt_name", None) or getattr(instance, "model", "lm"))


def calls_line(snapshot: dict) -> str:
    """``LM calls this run: N (kind a, kind b; F failed)`` for the terminal, from `CallCounter.snapshot()`.

    Example:
        >>> calls_line({"total": 3, "failed": 1, "cached": 0, "by_kind": {"greedy (base)": 3}, "errors": []})
        'LM calls this run: 3 (greedy (base) 3; 1 failed)'
    """
    parts = ", ".join(f"{k} {v}" for k, v in snapshot["by_kind"].items())
    failed = f"; {snapshot['failed']} failed" if snapshot["failed"] else ""
    return f"LM calls this run: {snapshot['total']}" + (f" ({parts}{failed})" if parts else "")
