"""The teacher: solves a teaching problem (TP) several times, giving TR-TA pairs."""

from __future__ import annotations

import dspy

from .adapter import TemplateAdapter
from .signatures import SolveProblem


class Teacher(dspy.Module):
    """Samples `num_samples` rationale + answer pairs (TR-TA) for a problem.

    Args:
        lm: The teacher's `dspy.LM` (its sampling settings apply; temperature > 0 for diversity).
        adapter: The prompt format; the paper's math prompt by default.
        num_samples: How many TR-TA pairs `forward` returns.

    Example:
        >>> teacher = Teacher(lm=dspy.LM("openai/gpt-4o-mini", temperature=0.7), num_samples=8)  # doctest: +SKIP
        >>> pairs = teacher(question="What is 7 * 6?")  # doctest: +SKIP
        >>> pairs[0].rationale, pairs[0].answer  # doctest: +SKIP
    """

    def __init__(self, lm: dspy.BaseLM | None = None, adapter: dspy.Adapter | None = None, num_samples: int = 8):
        super().__init__()
        self.lm = lm
        self.adapter = adapter or TemplateAdapter()
        self.num_samples = num_samples
        self.solve = dspy.Predict(SolveProblem)

    def sample(self, question: str, index: int) -> dspy.Prediction:
        """The `index`-th TR-TA for `question` (its own rollout id, so samples differ and each caches)."""
        # Sample 0 needs no rollout id (and a greedy teacher must not carry one).
        config = {"rollout_id": index} if index else {}
        with dspy.context(adapter=self.adapter, lm=self.lm or dspy.settings.lm):
            return self.solve(question=question, config=config)

    def forward(self, question: str) -> list[dspy.Prediction]:
        return [self.sample(question, i) for i in range(self.num_samples)]
