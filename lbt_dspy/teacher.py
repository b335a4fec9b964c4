"""The teacher: solves a teaching problem (TP) several times, giving TR-TA pairs."""

from __future__ import annotations

import asyncio

import dspy

from .adapter import TemplateAdapter
from .model_output import predict_or_unparsed
from .records import OUTPUT_FLAGS, prediction_record
from .renamed import renamed_argument
from .runner import parallel, recorded
from .signatures import SolveProblem


class Teacher(dspy.Module):
    """Samples `num_pairs` rationale + answer pairs (TR-TA) for a problem, concurrently.

    Args:
        lm: The teacher's `dspy.LM` (its sampling settings apply; temperature > 0 for diversity).
        adapter: The prompt format; the paper's math prompt by default.
        num_pairs: How many TR-TA pairs `forward` returns (``num_samples``: the earlier name, warns).
        num_threads: Samples in flight at once when called on its own (inside `M1` or a run, theirs bound them:
            `lbt_dspy.runner`).

    Inside a run (`lbt_dspy.runner.record_scope`) each pair is replayed from the run directory when recorded
    there, else made and recorded (stage ``teach``; ``greedy`` where the scope says so).

    Example:
        >>> teacher = Teacher(lm=lbt_dspy.lm("embedded", temperature=0.7), num_pairs=8)  # doctest: +SKIP
        >>> pred = teacher(question="What is 7 * 6?")  # doctest: +SKIP
        >>> pred.rationale, pred.answer                # the first pair  # doctest: +SKIP
        >>> [p.answer for p in pred.completions]      # all of them  # doctest: +SKIP
    """

    def __init__(self, lm: dspy.BaseLM | None = None, adapter: dspy.Adapter | None = None, num_pairs: int = 8,
                 num_threads: int = 8, num_samples: int | None = None):
        super().__init__()
        self.lm = lm
        self.adapter = adapter or TemplateAdapter()
        if num_samples is not None:
            renamed_argument("Teacher", "num_samples", "num_pairs")
            num_pairs = num_samples
        self.num_pairs = num_pairs
        self.num_threads = num_threads
        self.solve = dspy.Predict(SolveProblem)

    def sample(self, question: str, index: int) -> dspy.Prediction:
        """The `index`-th TR-TA pair for `question` (its own rollout id, so pairs differ and each caches)."""
        def make():
            # Pair 0 needs no rollout id (and a greedy teacher must not carry one).
            config = {"rollout_id": index} if index else {}
            with dspy.context(adapter=self.adapter, lm=self.lm or dspy.settings.lm):
                pred = predict_or_unparsed(self.solve, SolveProblem, question=question, config=config)
            return prediction_record(pred)  # whatever the model said is a pair, recorded as said

        rec = recorded("teach", {"pair": index}, make)
        return dspy.Prediction(rationale=rec["rationale"] or "", answer=rec["answer"] or "",
                               **{k: rec[k] for k in OUTPUT_FLAGS if k in rec})

    def forward(self, question: str) -> dspy.Prediction:
        """All pairs: the first one's ``rationale`` and ``answer``, every pair in ``completions``."""
        preds = parallel([lambda i=i: self.sample(question, i) for i in range(self.num_pairs)],
                         owner=self, num_threads=self.num_threads)
        return dspy.Prediction.from_completions([dict(p.items()) for p in preds], signature=SolveProblem)

    async def aforward(self, question: str) -> dspy.Prediction:
        # The engines are synchronous HTTP clients: the pairs run in worker threads, the event loop stays free.
        return await asyncio.to_thread(type(self).forward, self, question)
