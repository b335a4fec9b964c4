"""The student: answers exam problems (EPs) taught by demos in its context — the teacher's TR-TA pairs (M1), or
an example set (M3)."""

from __future__ import annotations

import asyncio
import json
import threading

import dspy

from .adapter import TemplateAdapter
from .model_output import predict_or_unparsed
from .signatures import SolveProblem


class Student(dspy.Module):
    """Answers an exam problem with demos as in-context examples.

    By default it is the paper's student: a ``dspy.Predict(SolveProblem)`` taught by TR-TA pairs, whose answer is
    its ``answer``. Given a `program` (M3: the program being tuned, or a program with its own LM), it runs that
    program taught by an example set, and its answer is the program's `answer_field` (M3: the label).

    Args:
        lm: The student's `dspy.LM` (None: the program's own LM where it has one, else ``dspy.settings.lm``).
        adapter: The prompt format; the paper's math prompt by default.
        name: A label for reports and records (default: the LM's name; for a program on its own LM,
            ``Class(lm name)``).
        program: What the student runs (default ``dspy.Predict(SolveProblem)``). An exam problem gives its first
            predictor's input fields; the demos taught replace the program's own.
        answer_field: The output field that is the student's answer.

    Example:
        >>> student = Student(lm=lbt_dspy.lm("embedded", temperature=0.7))  # doctest: +SKIP
        >>> demo = dspy.Example(question="2+2?", rationale="2+2=4.", answer="4")
        >>> student(question="3+3?", demos=[demo]).answer  # doctest: +SKIP
        >>> classifier = Student(lm, ClassifierAdapter(), program=make_classifier("Lie?"),  # doctest: +SKIP
        ...                      answer_field="label")
        >>> classifier(text="The moon is cheese.", demos=examples).label  # doctest: +SKIP
    """

    def __init__(self, lm: dspy.BaseLM | None = None, adapter: dspy.Adapter | None = None, name: str | None = None,
                 program: dspy.Module | None = None, answer_field: str = "answer"):
        super().__init__()
        self.lm = lm
        self.adapter = adapter or TemplateAdapter()
        self.solve = program if program is not None else dspy.Predict(SolveProblem)
        self.answer_field = answer_field
        self.input_fields = tuple(self.solve.predictors()[0].signature.input_fields)
        if name is None and lm is None and program is not None:
            own = self._own_lm()
            inner = getattr(own, "lbt_name", None) or getattr(own, "model", None)
            name = f"{type(program).__name__}({inner})" if inner else type(program).__name__
        self.name = name or getattr(lm, "lbt_name", None) or getattr(lm, "model", "student")
        self._taught = _Copies()

    def inputs_of(self, problem) -> dict:
        """What the student is asked of an exam problem: its values of the program's input fields."""
        return {f: problem[f] for f in self.input_fields}

    def _own_lm(self):
        return next((p.lm for p in self.solve.predictors() if p.lm is not None), None)

    def forward(self, question: str | None = None, demos: list | None = None, rollout_id: int | None = None,
                **inputs) -> dspy.Prediction:
        """The program's prediction for the inputs (``question=...``, or the program's own input fields), taught
        by `demos`; `rollout_id` makes repeated problems separate samples (ignored when greedy)."""
        if question is not None:
            inputs["question"] = question
        lm = self.lm or self._own_lm() or dspy.settings.lm
        # A greedy student answers a repeated exam problem the same way: no rollout id (DSPy would warn).
        greedy = (getattr(lm, "kwargs", None) or {}).get("temperature") == 0
        config = {"rollout_id": rollout_id} if rollout_id and not greedy else {}
        demos = list(demos or [])
        with dspy.context(adapter=self.adapter, lm=lm):  # any answer is a prediction (`model_output`)
            if isinstance(self.solve, dspy.Predict):
                return predict_or_unparsed(self.solve, self.solve.signature, demos=demos, config=config, **inputs)
            return predict_or_unparsed(self._taught.get(self.solve, demos), [self.answer_field], **inputs)

    async def aforward(self, question: str | None = None, demos: list | None = None, rollout_id: int | None = None,
                       **inputs) -> dspy.Prediction:
        return await asyncio.to_thread(type(self).forward, self, question, demos, rollout_id, **inputs)


def with_demos(program: dspy.Module, demos: list) -> dspy.Module:
    """A copy of `program` whose predictors all carry `demos`."""
    copy = program.deepcopy()
    for predictor in copy.predictors():
        predictor.demos = list(demos)
    return copy


class _Copies:
    """A program that is not one `dspy.Predict` carries demos on its predictors: one copy per example set, made
    once and shared by the threads (not a dict: DSPy would take the copies for the student's own predictors)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._by_demos: dict = {}

    def get(self, program: dspy.Module, demos: list) -> dspy.Module:
        key = json.dumps([dict(d) for d in demos], sort_keys=True, default=str)
        with self._lock:
            if key not in self._by_demos:
                self._by_demos[key] = with_demos(program, demos)
            return self._by_demos[key]

    def __deepcopy__(self, memo):  # a copy of the student makes its own copies
        return _Copies()
