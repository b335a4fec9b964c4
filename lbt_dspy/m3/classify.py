"""Concurrent Yes/No classification with a given example set: exams, scoring, test F1, baselines.

A copy of the program is made once per example set and shared by the threads; every call runs in its own
``dspy.context`` (LM + adapter), so nothing depends on the caller's thread-local settings. Repeated prompts
are answered by DSPy's cache.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import dspy
from dspy.utils.usage_tracker import UsageTracker

from .adapters import ClassifierAdapter
from .formats import demos_key, to_label

log = logging.getLogger("lbt_dspy")


def with_demos(program: dspy.Module, demos: list) -> dspy.Module:
    """A copy of `program` whose predictors all carry `demos` (``text``/``label`` examples)."""
    prog = program.deepcopy()
    for predictor in prog.predictors():
        predictor.demos = [dspy.Example(text=d["text"], label=d["label"]).with_inputs("text") for d in demos]
    return prog


def traced_call(fn: Callable, **context):
    """Run `fn()` in ``dspy.context(**context)``; returns ``(result, cached)``.

    ``cached`` is True when no request reached a server: DSPy's usage tracker records usage only for calls not
    answered by its cache (a server that reports no token usage would also look cached).
    """
    tracker = UsageTracker()
    with dspy.context(usage_tracker=tracker, **context):
        out = fn()
    return out, not tracker.usage_data


def thread_map(fn: Callable, items: list, num_threads: int, desc: str = "", progress: bool = False) -> list:
    """``[fn(x) for x in items]`` on `num_threads` threads, in order, with an optional tqdm bar."""
    if not items:
        return []
    from tqdm.auto import tqdm

    with ThreadPoolExecutor(max_workers=max(1, min(num_threads, len(items)))) as pool:
        return list(tqdm(pool.map(fn, items), total=len(items), desc=desc, disable=not progress, leave=False,
                         dynamic_ncols=True))


class Classifier:
    """Runs a Yes/No program with chosen demos and LMs, many calls at once.

    Args:
        program: The student program (input ``text``, output ``label``).
        adapter: The classification prompt (default `ClassifierAdapter`).
        num_threads: Calls in flight.
        progress: tqdm bars.
        on_call: Called as ``on_call(role, failed, cached)`` after every call (for counting; see `traced_call`).

    Example:
        >>> clf = Classifier(make_classifier("Is it a lie?"))  # doctest: +SKIP
        >>> clf.many([(demos, lm, "The moon is cheese.")], role="test")  # doctest: +SKIP
        ['Yes']
    """

    def __init__(self, program: dspy.Module, adapter: dspy.Adapter | None = None, num_threads: int = 16,
                 progress: bool = False, on_call: Callable[[str, bool, bool], None] | None = None):
        if not program.predictors():
            raise ValueError("the program has no predictors to carry demos")
        self.program = program
        self.adapter = adapter or ClassifierAdapter()
        self.num_threads = num_threads
        self.progress = progress
        self.on_call = on_call
        self._lock = threading.Lock()
        self._programs: dict = {}

    def program_for(self, demos: list) -> dspy.Module:
        key = demos_key(demos)
        with self._lock:
            prog = self._programs.get(key)
            if prog is None:
                prog = self._programs[key] = with_demos(self.program, demos)
        return prog

    def one(self, demos: list, lm, text: str, role: str = "classify") -> str | None:
        """"Yes"/"No" for `text` by `lm` with `demos` in context; None when the call failed (after retries)."""
        program = self.program_for(demos)
        try:
            pred, cached = traced_call(lambda: program(text=text), lm=lm, adapter=self.adapter)
        except Exception as exc:
            if self.on_call:
                self.on_call(role, True, False)
            log.warning("M3 classification failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return None
        if self.on_call:
            self.on_call(role, False, cached)
        return to_label(pred.label)

    def many(self, jobs: list[tuple], role: str = "classify", desc: str = "") -> list[str | None]:
        """`one` over ``(demos, lm, text)`` jobs concurrently; raises if every call failed."""
        out = thread_map(lambda job: self.one(job[0], job[1], job[2], role), jobs, self.num_threads, desc,
                         self.progress)
        if jobs and all(p is None for p in out):
            raise RuntimeError(f"M3: every classification call failed ({desc or role}); see the warnings above")
        return out
