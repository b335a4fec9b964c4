"""Whatever a model says is an answer: the boundary where its text becomes a prediction, never an exception.

A weak model answers with an empty string, whitespace, the stop string at once, a ramble without the answer
marker, text cut at ``max_tokens``, noise, or a bare marker with nothing after it. Each of these is data: it
is parsed (an answer, possibly empty), flagged, scored, recorded and counted in the reports. Only transport
and server faults are failed calls (DSPy retries those; a model's answer is never retried as an error: the
same prompt at temperature 0, or from a cache, would give the same answer anyway).

Every prediction made through this boundary carries, besides its signature's fields:

- ``completion``: the raw text the model returned (``""`` for an empty answer);
- ``unparsed``: True when the text did not follow the adapter's format (its `is_unparsed` says how);
- ``cut_off``: True when the server stopped it at ``max_tokens`` (``finish_reason == "length"``), None when
  the LM does not say (an LM not built by lbt).

Two layers:

- `OutputIsData`, a mixin for adapters that parse raw text (`TemplateAdapter`, the M3 adapters): an empty
  answer is parsed like any other instead of DSPy's "The LM returned an empty or null response".
- `predict_or_unparsed`, around a `dspy.Predict` call with *any* adapter (DSPy's ChatAdapter or JSONAdapter
  included): an `AdapterParseError` becomes a prediction with empty outputs and ``unparsed=True``.
"""

from __future__ import annotations

import contextvars
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

import dspy
from dspy.utils.exceptions import AdapterParseError

# (the outputs list an LM call returned, the finish reason of each output): set by `LbtLM.update_history`
_FINISH: contextvars.ContextVar[tuple[Any, list[str | None]] | None] = contextvars.ContextVar(
    "lbt_finish_reasons", default=None)


def note_finish_reasons(entry: dict) -> None:
    """Remember the finish reasons of an LM call from its history entry (see `lbt_dspy.models.pool.LbtLM`).
    The outputs list is the very object the adapter receives, so a reader never takes another call's."""
    response = entry.get("response")
    responses = response if isinstance(response, (list, tuple)) else [response]
    reasons = []
    for r in responses:
        if hasattr(r, "finish_reason"):  # a lm15 Response (fresh or from DSPy's cache)
            reasons.append(getattr(r, "finish_reason", None))
        else:  # an OpenAI-shaped response
            choices = getattr(r, "choices", None) or []
            reasons.extend(getattr(c, "finish_reason", None) for c in choices)
    _FINISH.set((entry.get("outputs"), reasons))


def finish_reasons(outputs) -> list[str | None] | None:
    """The finish reasons noted for `outputs` (the list an LM call returned), or None when unknown."""
    noted = _FINISH.get()
    if noted is None or noted[0] is not outputs:
        return None
    return noted[1]


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def output_text(output) -> str:
    """The text of one LM output (a string or a dict with ``text``); None and missing text are ``""``.

    A lone UTF-16 surrogate (a server may send ``"\\ud800"`` in JSON) becomes U+FFFD: as it is, no UTF-8 file
    could record it and no provider would take the text back as a demo in the next prompt.

    Example:
        >>> output_text({"text": None}), output_text("a\\ud800b")
        ('', 'a\\ufffdb')
    """
    text = output.get("text") if isinstance(output, dict) else output
    if not isinstance(text, str):
        return ""
    return _LONE_SURROGATE.sub("\ufffd", text)


class OutputIsData:
    """Mixin for a `dspy.Adapter` whose `parse` takes any text: no model answer raises.

    The adapter's `parse` is called with the raw text, even an empty one; the values get ``completion``,
    ``unparsed`` (`is_unparsed`) and ``cut_off``. Put it before `dspy.Adapter` in the bases.

    Example:
        >>> class Echo(OutputIsData, dspy.Adapter):
        ...     def format(self, signature, demos, inputs): return [{"role": "user", "content": inputs["q"]}]
        ...     def parse(self, signature, completion): return {"a": completion.strip()}
        >>> Echo()._call_postprocess(None, dspy.Signature("q -> a"), [""], None, {})
        [{'a': '', 'completion': '', 'unparsed': True, 'cut_off': None}]
    """

    def is_unparsed(self, signature, completion: str, value: dict) -> bool:
        """Whether `completion` did not follow the format (default: it is empty or whitespace)."""
        return not completion.strip()

    def _call_postprocess(self, processed_signature, original_signature, outputs, lm, lm_kwargs):
        reasons = finish_reasons(outputs)
        values = []
        for i, output in enumerate(outputs):
            text = output_text(output)
            value = dict(self.parse(processed_signature or original_signature, text))
            for name in original_signature.output_fields:
                value.setdefault(name, "")
            if isinstance(output, dict) and output.get("logprobs"):
                value["logprobs"] = output["logprobs"]
            value["completion"] = text
            value["unparsed"] = bool(self.is_unparsed(original_signature, text, value))
            value["cut_off"] = (reasons[i] == "length") if reasons is not None and i < len(reasons) else None
            values.append(value)
        return values


def predict_or_unparsed(predict: Callable[..., dspy.Prediction], outputs, **kwargs) -> dspy.Prediction:
    """``predict(**kwargs)``, where an answer no adapter could parse is a prediction, not an exception.

    Args:
        predict: A `dspy.Predict` (or a program that runs one) under any adapter.
        outputs: Its signature, or the names of its output fields: those of an unparsed answer (all ``""``).

    Returns:
        The prediction; for an `AdapterParseError` (DSPy's ChatAdapter and JSONAdapter raise it when a model
        ignores their format), one with empty outputs, ``completion`` (the model's text), ``unparsed=True``.
    """
    try:
        pred = predict(**kwargs)
    except AdapterParseError as exc:
        names = outputs.output_fields if hasattr(outputs, "output_fields") else outputs
        fields = {name: "" for name in names}
        return dspy.Prediction(**fields, completion=exc.lm_response or "", unparsed=True, cut_off=None)
    for name, default in (("completion", None), ("unparsed", False), ("cut_off", None)):
        if name not in pred:
            pred[name] = default
    return pred


# --- the console: what a model said is not a warning ----------------------------------------------------
class _DropNotices(logging.Filter):
    """Drops log records whose message starts with one of `prefixes` (per-call notices about answers)."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            msg = str(record.getMessage())
        except Exception:
            return True
        return not msg.lstrip().startswith(self.prefixes)


def quiet_answer_notices() -> None:
    """Keep DSPy's per-call "LM response was truncated" and math-verify's "Timeout is disabled" notices off the
    console: a cut-off answer is data (counted in reports as ``cut_off``), and lbt bounds math-verify's work
    itself (answers are cut to 2,000 characters; its signal timeout exists only in the main thread)."""
    for name, prefixes in (("dspy.clients.lm", ("LM response was truncated",)),
                           ("math_verify.grader", ("Timeout is disabled",)),
                           ("math_verify.parser", ("Timeout is disabled",))):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNotices) for f in logger.filters):
            logger.addFilter(_DropNotices(*prefixes))


# --- counts for reports ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class OutputCounts:
    """How many answers of one kind (a method's, a student's) did not follow the format or were cut off.

    Args:
        n: Answers.
        unparsed: Answers flagged ``unparsed``.
        cut_off: Answers stopped at ``max_tokens``.
        empty: Answers with no text at all (or only whitespace).
        flagged: Answers that carry the flags (records made before they existed do not).
    """

    n: int = 0
    unparsed: int = 0
    cut_off: int = 0
    empty: int = 0
    flagged: int = 0

    @classmethod
    def of(cls, records) -> "OutputCounts":
        """Counts over records (dicts with ``unparsed``, ``cut_off``, ``completion``)."""
        n = unparsed = cut_off = empty = flagged = 0
        for rec in records:
            n += 1
            unparsed += bool(rec.get("unparsed"))
            cut_off += bool(rec.get("cut_off"))
            completion = rec.get("completion")
            empty += isinstance(completion, str) and not completion.strip()
            flagged += "unparsed" in rec
        return cls(n, unparsed, cut_off, empty, flagged)

    def as_dict(self) -> dict:
        return {"n": self.n, "unparsed": self.unparsed, "cut_off": self.cut_off, "empty": self.empty,
                "flagged": self.flagged}


def answers_section(counts: dict[str, dict | OutputCounts]) -> str:
    """The report.md section on what the models said (`lbt m1`, `lbt m2 eval`, `lbt m3`): the table and how to read it."""
    return ("## What the models said\n\n" + output_table(counts) + "\n\nEvery answer is scored and recorded as the "
            "model gave it (`completion` in the records): unparsed (the answer format not followed), cut off at "
            "max_tokens, or empty; none is retried or dropped.\n")


def output_table(counts: dict[str, dict | OutputCounts]) -> str:
    """The markdown table of `OutputCounts` by row label ("Greedy (teacher)", "exam: student"...)."""
    lines = ["| answers | n | unparsed | cut off at max_tokens | empty |", "|---|---|---|---|---|"]

    def pct(k, n):
        return f"{k} ({100 * k / n:.1f}%)" if n else "0"

    for label, c in counts.items():
        c = c if isinstance(c, OutputCounts) else OutputCounts(**c)
        note = "" if c.flagged == c.n else f" ({c.n - c.flagged} recorded before the flags)"
        lines.append(f"| {label}{note} | {c.n} | {pct(c.unparsed, c.n)} | {pct(c.cut_off, c.n)} | {pct(c.empty, c.n)} |")
    return "\n".join(lines)
