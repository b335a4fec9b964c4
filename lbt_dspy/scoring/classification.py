"""Scoring a classifier's answers (M3): an exam problem is a labelled example, an answer is a label (or free text).

Not in the ``exam_scorer`` registry: `LbTOptimizer` builds it from the program it tunes (its output field and
labels) and the metric it was given.
"""

from __future__ import annotations

import dspy

from .base import ExamScorer


class ClassificationScorer(ExamScorer):
    """Scores a student's answer to a labelled example by a DSPy metric (default: exact match of the label).

    Args:
        fields: What the answers are: an object with ``output`` (the field the examples label), ``labels`` (the
            label set, None for free text), ``label_of(value)`` (an answer as a label) and ``same(a, b)`` (exact
            match), e.g. `lbt_dspy.m3.TaskFields`.
        metric: ``metric(example, pred, trace=None)`` as DSPy optimizers take it; it sees a prediction holding the
            answer, as a label, in the output field. None: exact match (``fields.same``).

    Example:
        >>> from lbt_dspy.m3 import TaskFields
        >>> scorer = ClassificationScorer(TaskFields(("text",), "label", ("Yes", "No")))
        >>> example = dspy.Example(text="The moon is cheese.", label="Yes")
        >>> scorer.extract(" **yes**, surely"), scorer.score("Yes.", scorer.reference(example))
        ('Yes', 1.0)
        >>> scorer.score("No", example)
        0.0
    """

    def __init__(self, fields, metric=None):
        self.fields = fields
        self.metric = metric

    def reference(self, item):
        """The example itself: the metric reads its output field (and may read the others)."""
        return item

    def extract(self, text):
        """A model's output as a label (`fields.label_of`); free text as it is."""
        return self.fields.label_of(text) if self.fields.labels else text

    def score(self, answer, reference) -> float:
        out = self.fields.output
        pred = dspy.Prediction(**{out: self.extract(answer)})
        if self.metric is None:
            return float(self.fields.same(reference[out], pred[out]))
        return float(self.metric(reference, pred))

    def equivalent(self, a, b) -> bool:
        return self.fields.same(a, b)
