"""Metrics: binary F1 over "Yes"/"No" labels (the paper's, positive class Yes), accuracy, macro F1, and
per-example DSPy metrics (`exact_match`, what `LbTOptimizer` scores by without a metric, and `token_f1`)."""

from __future__ import annotations

from .formats import YES


def binary_f1(labels: list[str], preds: list[str], positive: str = YES) -> float:
    """F1 of the positive class (sklearn's ``average='binary'``, as the patch's ``run_evaluate``); 0 when undefined.

    Example:
        >>> round(binary_f1(["Yes", "Yes", "No", "No"], ["Yes", "No", "Yes", "No"]), 3)
        0.5
    """
    tp = sum(1 for y, p in zip(labels, preds) if y == positive and p == positive)
    fp = sum(1 for y, p in zip(labels, preds) if y != positive and p == positive)
    fn = sum(1 for y, p in zip(labels, preds) if y == positive and p != positive)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def accuracy(labels: list[str], preds: list[str]) -> float:
    """Share of predictions equal to the label (the patch's ``01`` scorer); 0 for no examples."""
    return sum(1 for y, p in zip(labels, preds) if y == p) / len(labels) if labels else 0.0


def summary(labels: list[str], preds: list[str | None]) -> dict:
    """F1, accuracy and counts over the answered items (a failed call, None, is left out and counted)."""
    pairs = [(y, p) for y, p in zip(labels, preds) if p is not None]
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    return {"f1": binary_f1(ys, ps), "accuracy": accuracy(ys, ps), "n": len(pairs),
            "failed": len(labels) - len(pairs), "predicted_yes": sum(p == YES for p in ps)}


def macro_f1(labels: list[str], preds: list[str], label_set=None) -> float:
    """Mean F1 over the labels (sklearn's ``average='macro'`` over `label_set`, default those in `labels`).

    Example:
        >>> round(macro_f1(["a", "b", "c", "c"], ["a", "c", "c", "c"]), 3)
        0.6
    """
    classes = list(label_set) if label_set else sorted(set(labels))
    return sum(binary_f1(labels, preds, positive=c) for c in classes) / len(classes) if classes else 0.0


# --- per-example metrics, as DSPy optimizers take them: metric(example, pred, trace=None) ------------------
class exact_match:  # noqa: N801 - used like a function: exact_match(fields)
    """Exact match on the output field: labels compared after `TaskFields.label_of`, free text case- and
    whitespace-insensitively (`TaskFields.same`, which `LbTOptimizer`'s `ClassificationScorer` uses without a metric).

    Args:
        fields: A `TaskFields`, or the output field's name (then compared as free text).

    Example:
        >>> import dspy
        >>> metric = exact_match("answer")
        >>> metric(dspy.Example(answer="Paris"), dspy.Prediction(answer=" paris "))
        True
    """

    def __init__(self, fields):
        from .fields import TaskFields

        self.fields = fields if isinstance(fields, TaskFields) else TaskFields((), fields, None)

    def __call__(self, example, pred, trace=None) -> bool:
        out = self.fields.output
        return self.fields.same(example[out], pred[out])


class token_f1:  # noqa: N801
    """Token-level F1 between the predicted and the gold output (SQuAD-style), for free-text outputs.

    Example:
        >>> import dspy
        >>> round(token_f1("answer")(dspy.Example(answer="the red car"), dspy.Prediction(answer="a red car")), 3)
        0.667
    """

    def __init__(self, output_field: str):
        self.output_field = output_field

    def __call__(self, example, pred, trace=None) -> float:
        from collections import Counter

        gold = str(example[self.output_field]).lower().split()
        got = str(pred[self.output_field] or "").lower().split()
        common = sum((Counter(gold) & Counter(got)).values())
        if not common:
            return 0.0
        precision, recall = common / len(got), common / len(gold)
        return 2 * precision * recall / (precision + recall)
