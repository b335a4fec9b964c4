"""Concurrent classification with a given example set: exams, scoring, test F1, baselines.

Students are LMs (the program runs on them) or programs (they run with the demos on their own LMs).

A copy of the program is made once per example set and shared by the threads; every call runs in its own
``dspy.context`` (LM + adapter), so nothing depends on the caller's thread-local settings. Repeated prompts
are answered by DSPy's cache.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable

import dspy
from dspy.utils.usage_tracker import UsageTracker

from ..model_output import predict_or_unparsed
from ..runner import map_calls
from .adapters import ClassifierAdapter
from .fields import TEXT_LABEL
from .formats import demos_key

log = logging.getLogger("lbt_dspy")


def with_demos(program: dspy.Module, demos: list, fields=None) -> dspy.Module:
    """A copy of `program` whose predictors all carry `demos` (examples with `fields`, default text/label)."""
    f = fields or TEXT_LABEL
    prog = program.deepcopy()
    for predictor in prog.predictors():
        predictor.demos = [f.example(d) for d in demos]
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


class Classifier:
    """Runs a program with chosen demos on chosen students (LMs or programs), many calls at once.

    Args:
        program: The student program; an LM student runs it, a program student runs itself.
        adapter: The classification prompt (default `ClassifierAdapter`, the paper's).
        num_threads: Calls in flight.
        progress: tqdm bars.
        on_call: Called as ``on_call(role, failed, cached)`` after a failed call and ``on_call(role, False, cached,
            prediction)`` after an answer (for counting; see `traced_call`; the prediction's ``unparsed``).
        fields: The program's `TaskFields` (default: the paper's text -> Yes/No label).

    Example:
        >>> clf = Classifier(make_classifier("Is it a lie?"))  # doctest: +SKIP
        >>> clf.many([(demos, lm, "The moon is cheese.")], role="test")  # doctest: +SKIP
        ['Yes']
    """

    def __init__(self, program: dspy.Module, adapter: dspy.Adapter | None = None, num_threads: int = 16,
                 progress: bool = False, on_call: Callable[[str, bool, bool], None] | None = None, fields=None):
        if not program.predictors():
            raise ValueError("the program has no predictors to carry demos")
        self.program = program
        self.adapter = adapter or ClassifierAdapter()
        self.fields = fields or TEXT_LABEL
        self.num_threads = num_threads
        self.progress = progress
        self.on_call = on_call
        self._lock = threading.Lock()
        self._programs: dict = {}

    def program_for(self, demos: list, student=None) -> dspy.Module:
        """The program (a program student, or ours) carrying `demos`; one copy per set, shared by threads."""
        base = student if isinstance(student, dspy.Module) else self.program
        key = (id(base), demos_key(demos, self.fields))
        with self._lock:
            prog = self._programs.get(key)
            if prog is None:
                prog = self._programs[key] = with_demos(base, demos, self.fields)
        return prog

    def predict(self, demos: list, student, inputs, role: str = "classify") -> dspy.Prediction | None:
        """The prediction of `student` (an LM, or a program on its own LM) for `inputs` (a dict, or the text of
        the paper's program) with `demos` in context; its output field holds the label (`TaskFields.label_of`).
        None when the call failed (after retries)."""
        program = self.program_for(demos, student)
        if not isinstance(inputs, dict):
            inputs = {self.fields.inputs[0]: inputs}
        context = {"adapter": self.adapter}
        if not isinstance(student, dspy.Module):
            context["lm"] = student
        try:
            # an answer the adapter cannot parse (DSPy's ChatAdapter too) is an unparsed answer, not a failure
            pred, cached = traced_call(lambda: predict_or_unparsed(program, [self.fields.output], **inputs), **context)
            value = self.fields.label_of(pred[self.fields.output]) if self.fields.labels else pred[self.fields.output]
        except Exception as exc:
            if self.on_call:
                self.on_call(role, True, False)
            log.warning("M3 classification failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return None
        if self.on_call:
            self.on_call(role, False, cached, pred)
        pred[self.fields.output] = value
        return pred

    def one(self, demos: list, student, inputs, role: str = "classify"):
        """The label (or free-text answer) of `predict`; None when the call failed."""
        pred = self.predict(demos, student, inputs, role)
        return None if pred is None else pred[self.fields.output]

    def many(self, jobs: list[tuple], role: str = "classify", desc: str = "", full: bool = False) -> list:
        """`one` (`predict` with ``full``) over ``(demos, student, inputs)`` jobs concurrently; raises if every
        call failed."""
        fn = self.predict if full else self.one
        out = map_calls(lambda job: fn(job[0], job[1], job[2], role), jobs, owner=self, num_threads=self.num_threads,
                        desc=desc, progress=self.progress)
        if jobs and all(p is None for p in out):
            raise RuntimeError(f"M3: every classification call failed ({desc or role}); see the warnings above")
        return out
