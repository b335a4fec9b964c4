"""The student: solves exam problems (EPs) taught by TR-TA demos in its context."""

from __future__ import annotations

import asyncio

import dspy

from .adapter import TemplateAdapter
from .model_output import predict_or_unparsed
from .signatures import SolveProblem


class Student(dspy.Module):
    """Answers an exam problem with the teacher's TR-TA pairs as in-context examples.

    Args:
        lm: The student's `dspy.LM`.
        adapter: The prompt format; the paper's math prompt by default.
        name: A label for reports and records (the LM's name when None).

    Example:
        >>> student = Student(lm=lbt_dspy.lm("embedded", temperature=0.7))  # doctest: +SKIP
        >>> demo = dspy.Example(question="2+2?", rationale="2+2=4.", answer="4")
        >>> student(question="3+3?", demos=[demo]).answer  # doctest: +SKIP
    """

    def __init__(self, lm: dspy.BaseLM | None = None, adapter: dspy.Adapter | None = None, name: str | None = None):
        super().__init__()
        self.lm = lm
        self.adapter = adapter or TemplateAdapter()
        self.name = name or getattr(lm, "lbt_name", None) or getattr(lm, "model", "student")
        self.solve = dspy.Predict(SolveProblem)

    def forward(self, question: str, demos: list | None = None, rollout_id: int | None = None) -> dspy.Prediction:
        lm = self.lm or dspy.settings.lm
        # A greedy student answers a repeated exam problem the same way: no rollout id (DSPy would warn).
        greedy = (getattr(lm, "kwargs", None) or {}).get("temperature") == 0
        config = {"rollout_id": rollout_id} if rollout_id and not greedy else {}
        with dspy.context(adapter=self.adapter, lm=lm):  # any answer is a prediction (`model_output`)
            return predict_or_unparsed(self.solve, SolveProblem, question=question, demos=list(demos or []),
                                       config=config)

    async def aforward(self, question: str, demos: list | None = None, rollout_id: int | None = None
                       ) -> dspy.Prediction:
        return await asyncio.to_thread(type(self).forward, self, question, demos, rollout_id)
