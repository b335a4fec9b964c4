"""Binary classification metrics over "Yes"/"No" labels (positive class: Yes)."""

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


METRICS = {"f1": binary_f1, "accuracy": accuracy}


def summary(labels: list[str], preds: list[str | None]) -> dict:
    """F1, accuracy and counts over the answered items (a failed call, None, is left out and counted)."""
    pairs = [(y, p) for y, p in zip(labels, preds) if p is not None]
    ys, ps = [y for y, _ in pairs], [p for _, p in pairs]
    return {"f1": binary_f1(ys, ps), "accuracy": accuracy(ys, ps), "n": len(pairs),
            "failed": len(labels) - len(pairs), "predicted_yes": sum(p == YES for p in ps)}
