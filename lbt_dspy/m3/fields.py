"""What M3 reads from a program and its trainset: input fields, the output field, the label set.

`TaskFields.from_program` looks at the program's signature (inputs of its first predictor, the output of its
last one that the trainset labels) and at the trainset's values of that output: 0/1 or Yes/No labels are the
paper's Yes/No setting (normalised to ``"Yes"``/``"No"``, as the LbT patch does); a handful of repeated values
(or a ``Literal[...]`` annotation, or ``labels=``) is a label set; anything else is free text, scored by the
metric. Names are shown to models in title case (``text`` -> ``Text``), so the paper's ``text``/``label``
program renders exactly as the patch's prompts. The label vocabulary of the paper's setting (Yes/No, and how
datasets and models write them) is here too.
"""

from __future__ import annotations

import re
import typing
from dataclasses import dataclass

import dspy

# --- the paper's labels ----------------------------------------------------------------------------------
YES, NO = "Yes", "No"

_YES_WORDS = {"yes", "true", "1", "positive"}
_NO_WORDS = {"no", "false", "0", "negative"}


def title(name: str) -> str:
    """A field name as shown to a model: ``text`` -> ``Text``, ``premise_text`` -> ``Premise text``."""
    name = name.replace("_", " ").strip()
    return name[:1].upper() + name[1:]


def to_label(value) -> str:
    """A dataset or model label as ``"Yes"``/``"No"``: 1/True/"yes"... -> Yes, everything else -> No.

    Example:
        >>> to_label(1), to_label("no"), to_label(" YES."), to_label(0)
        ('Yes', 'No', 'Yes', 'No')
    """
    if isinstance(value, bool):
        return YES if value else NO
    if isinstance(value, (int, float)):
        return YES if value == 1 else NO
    return parse_label_word(str(value)) or (YES if answer_is_yes(str(value)) else NO)


_MARKUP = re.compile(r"^[\s\"'*`#:>\-\[\]]+")


def strip_markup(text: str | None) -> str:
    """`text` without the quotes, bold, bullets and brackets a model may open its answer with."""
    return _MARKUP.sub("", text or "")


def answer_is_yes(completion: str) -> bool:
    """The patch's rule: the prediction is positive iff the answer starts with "YES" (after markup)."""
    return strip_markup(completion).upper().startswith("YES")


def parse_label_word(word: str) -> str | None:
    """A label written by the teacher ("Yes", "no", "True", "1"...), or None when it is not one."""
    w = re.sub(r"[^a-z0-9]", "", (word or "").lower())
    if w in _YES_WORDS:
        return YES
    if w in _NO_WORDS:
        return NO
    return None


#: Dataset values that make a label set the paper's Yes/No one.
_YES_NO_VALUES = {0, 1, True, False, "0", "1", "yes", "no"}
#: At most this many distinct values (each repeated) are read as a label set rather than free text.
MAX_LABELS = 20


def _is_yes_no(value) -> bool:
    if isinstance(value, str):
        return value.strip().lower() in _YES_NO_VALUES
    return isinstance(value, (bool, int)) and value in _YES_NO_VALUES


def literal_labels(signature, field: str) -> tuple | None:
    """The labels of a ``Literal[...]`` output field, else None."""
    annotation = signature.output_fields[field].annotation if field in signature.output_fields else None
    if typing.get_origin(annotation) is typing.Literal:
        return tuple(str(a) for a in typing.get_args(annotation))
    return None


def normalize_text(value) -> str:
    """Case- and whitespace-insensitive form of a free-text answer (for exact match)."""
    return " ".join(str(value).split()).lower()


@dataclass(frozen=True)
class TaskFields:
    """The fields M3 works with.

    Args:
        inputs: Input field names, in the signature's order.
        output: The output field the examples label and the metric scores.
        labels: The label set (``("Yes", "No")`` for the paper's setting); None: free text.

    Example:
        >>> f = TaskFields(("sentence",), "sentiment", ("positive", "negative", "neutral"))
        >>> f.label_of(" **Negative**, clearly"), f.yes_no
        ('negative', False)
    """

    inputs: tuple
    output: str
    labels: tuple | None = None

    @property
    def yes_no(self) -> bool:
        return self.labels == (YES, NO)

    # --- reading a program ------------------------------------------------------------------------
    @classmethod
    def from_program(cls, program: dspy.Module, trainset: list, output_field: str | None = None,
                     labels: list | None = None) -> "TaskFields":
        """The fields of `program` as labelled by `trainset` (see the module docstring).

        Raises ValueError naming the example and field when the trainset does not fit the program.
        """
        predictors = program.predictors()
        if not predictors:
            raise ValueError("the program has no predictors to carry demos")
        first, last = predictors[0].signature, predictors[-1].signature
        inputs = tuple(first.input_fields)
        if not trainset:
            raise ValueError("trainset is empty")
        if output_field is None:
            present = [f for f in last.output_fields if f in trainset[0]]
            if not present:
                raise ValueError(f"trainset[0]: labels none of the program's outputs ({', '.join(last.output_fields)})")
            output_field = present[0]
        for n, ex in enumerate(trainset):
            for f in (*inputs, output_field):
                try:
                    ex[f]
                except (KeyError, TypeError):
                    raise ValueError(f"trainset[{n}]: needs {', '.join(repr(x) for x in (*inputs, output_field))}"
                                     ) from None
        values = [ex[output_field] for ex in trainset]
        if labels is not None:
            found = tuple(str(x) for x in labels)
        elif all(_is_yes_no(v) for v in values):
            found = (YES, NO)
        else:
            found = literal_labels(last, output_field)
            if found is None:
                distinct = sorted({str(v).strip() for v in values})
                repeated = len(distinct) <= MAX_LABELS and len(distinct) * 2 <= len(values)
                found = tuple(distinct) if repeated else None
        return cls(inputs, output_field, found)

    # --- labels -----------------------------------------------------------------------------------
    def label_of(self, value) -> str:
        """A dataset value or a model's answer as a label: Yes/No by the patch's rule, the label the answer
        names (case and markup ignored), or the answer itself (stripped) when it names none / free text."""
        if self.yes_no:
            return to_label(value)
        text = str(value if value is not None else "").strip()
        if not self.labels:
            return text
        low = strip_markup(text).lower()
        by_length = sorted(self.labels, key=len, reverse=True)
        for label in by_length:
            if low.startswith(label.lower()):
                return label
        hits = [(low.find(label.lower()), -len(label), label) for label in by_length if label.lower() in low]
        return min(hits)[2] if hits else text

    def same(self, a, b) -> bool:
        """Exact match of two outputs (labels after `label_of`; free text case/whitespace-insensitive)."""
        if self.labels:
            return self.label_of(a) == self.label_of(b)
        return normalize_text(a) == normalize_text(b)

    # --- examples ---------------------------------------------------------------------------------
    def example(self, row) -> dspy.Example:
        """A demo/train example with exactly these fields, the output as a label."""
        data = {f: row[f] for f in self.inputs}
        data[self.output] = self.label_of(row[self.output]) if self.labels else row[self.output]
        return dspy.Example(**data).with_inputs(*self.inputs)

    def inputs_of(self, row) -> dict:
        return {f: row[f] for f in self.inputs}

    def dicts(self, demos) -> list[dict]:
        """Demos as plain dicts (records, JSON)."""
        return [{f: d[f] for f in (*self.inputs, self.output)} for d in demos]

    def key(self, demos) -> tuple:
        """What makes two example sets duplicates: the same inputs (whitespace-normalised) and outputs, in order."""
        def one(d):
            ins = tuple(" ".join(str(d[f]).split()) for f in self.inputs)
            return (*ins, d[self.output])
        return tuple(one(d) for d in demos)

    # --- what the teacher is told -----------------------------------------------------------------
    def example_kinds(self) -> str:
        """How the teacher's examples are described ("I need a list of K {kinds}learning examples")."""
        return "positive and negative " if self.yes_no else ("labelled " if self.labels else "")

    def example_format(self) -> str:
        """How the teacher is told to lay out one example, so its answer parses into demos."""
        ins = [f'"{title(f)}: ..."' for f in self.inputs]
        lead = f"a line {ins[0]}" if len(ins) == 1 else "lines " + ", ".join(ins[:-1]) + f" and {ins[-1]}"
        out = title(self.output)
        if self.labels:
            opts = [f'"{out}: {label}"' for label in self.labels]
            choice = opts[0] if len(opts) == 1 else ", ".join(opts[:-1]) + f" or {opts[-1]}"
        else:
            choice = f'"{out}: ..."'
        return f"Write each example as {lead} followed by a line {choice}."

    def output_format(self) -> str:
        """The classifier prompt's ``# Output format`` line (the patch: "Answer Yes or No as labels")."""
        if self.labels:
            opts = list(self.labels)
            return "Answer " + (opts[0] if len(opts) == 1 else ", ".join(opts[:-1]) + f" or {opts[-1]}") + " as labels"
        return f"Answer with the {title(self.output).lower()} only"

    def question(self, signature) -> str:
        """The task question the teacher and the classifier see: the signature's instructions, unless they are
        DSPy's boilerplate ("Given the fields ..."), which says nothing about the task."""
        text = (signature.instructions or "").strip()
        if text and not text.startswith("Given the fields "):
            return text
        ins = " and ".join(title(f).lower() for f in self.inputs)
        what = title(self.output).lower()
        if self.labels:
            return f"Given the {ins}, give the {what}: {', '.join(self.labels)}."
        return f"Given the {ins}, give the {what}."


#: The paper's program: ``text`` in, Yes/No ``label`` out.
TEXT_LABEL = TaskFields(("text",), "label", (YES, NO))
