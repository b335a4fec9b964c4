"""The paper's plain-text prompts as DSPy adapters: one for the classifier (Yes/No as in the paper, or any labels and
fields), one for the teacher.

Small open models do not follow DSPy's ``[[ ## field ## ]]`` chat format, and the paper's numbers come from
its own prompts, so both adapters render the patch's prompts verbatim and parse the raw answer.
"""

from __future__ import annotations

import re
from typing import Any

import dspy

from ..model_output import OutputIsData
from .fields import TaskFields, literal_labels, strip_markup, title
from .formats import NO, YES, answer_is_yes, parse_label_word, render_examples

#: The patch's ``prompts/{liar,fallacy}.md``: ``{examples}`` / ``{prediction}`` are the demos and the text to
#: classify; ``{output_format}`` is "Answer Yes or No as labels" for the paper's Yes/No task.
PAPER_CLASSIFY_TEMPLATE = ("# Task\n{question}\n\n# Examples\n{examples}\n\n# Output format\n"
                           "{output_format}\n\n# Prediction\n{prediction}")
#: The same prompt without demos (zero-shot baseline).
ZERO_SHOT_TEMPLATE = "# Task\n{question}\n\n# Output format\n{output_format}\n\n# Prediction\n{prediction}"

#: Assistant prefills that steer small models into the expected layout (`TeacherAdapter(prefills=...)`).
STEERING_PREFILLS = {"examples": "<START>\nText:", "reasons": "<START>"}


class ClassifierAdapter(OutputIsData, dspy.Adapter):
    """Renders a classification call as the patch's plain-text prompt and parses the raw answer.

    The task question is the signature's instructions; demos fill the ``# Examples`` section; the inputs
    follow as ``Name: value`` lines and the output's name ends the prompt. For the paper's Yes/No labels
    the answer is Yes iff it starts with "yes" (the patch: ``response.upper().startswith("YES")``); for
    other labels it is the label the answer starts with (or names first); for free text, its first line.

    Args:
        template: The prompt with ``{question}``, ``{examples}``, ``{output_format}`` and ``{prediction}``
            (``{text}``, the first input, also works).
        zero_shot_template: The prompt used when there are no demos.
        input_fields: The signature's input fields shown (default: all of them).
        output_field: The output field receiving the answer (default: the signature's last output).
        labels: The label set; None: the output's ``Literal[...]`` annotation, else Yes/No (the paper's);
            ``()``: free text.
        prefill: Optional assistant prefill (sent with engines that continue it, dropped by plain chat).

    Example:
        >>> adapter = ClassifierAdapter()
        >>> from lbt_dspy.m3.signatures import make_classifier
        >>> sig = make_classifier("Is it a lie?").signature
        >>> print(adapter.format(sig, [dspy.Example(text="2+2=5", label="Yes")], {"text": "1+1=2"})[0]["content"])
        # Task
        Is it a lie?
        <BLANKLINE>
        # Examples
        ### Example 1
        **Text:** 2+2=5
        **Label:** Yes
        <BLANKLINE>
        # Output format
        Answer Yes or No as labels
        <BLANKLINE>
        # Prediction
        Text: 1+1=2
        Label:
        >>> sig = dspy.Signature("sentence -> sentiment", "Classify the sentiment.")
        >>> ClassifierAdapter(labels=["positive", "negative"]).parse(sig, "**Negative**, I think")
        {'sentiment': 'negative'}
    """

    def __init__(self, template: str = PAPER_CLASSIFY_TEMPLATE, zero_shot_template: str = ZERO_SHOT_TEMPLATE,
                 input_fields: str | list | None = None, output_field: str | None = None,
                 labels: list | tuple | None = None, prefill: str = ""):
        super().__init__()
        self.template = template
        self.zero_shot_template = zero_shot_template
        self.input_fields = (input_fields,) if isinstance(input_fields, str) else (
            tuple(input_fields) if input_fields else None)
        self.output_field = output_field
        self.labels = tuple(labels) if labels is not None else None
        self.prefill = prefill

    def bind(self, fields: TaskFields) -> "ClassifierAdapter":
        """A copy that renders and parses `fields` (the optimizer binds the task's labels this way)."""
        return ClassifierAdapter(self.template, self.zero_shot_template, list(fields.inputs), fields.output,
                                 fields.labels if fields.labels is not None else (), self.prefill)

    def fields_for(self, signature) -> TaskFields:
        inputs = self.input_fields or tuple(signature.input_fields)
        output = self.output_field or list(signature.output_fields)[-1]
        labels = self.labels if self.labels is not None else (literal_labels(signature, output) or (YES, NO))
        return TaskFields(inputs, output, labels or None)

    def format(self, signature, demos: list, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        f = self.fields_for(signature)
        template = self.template if demos else self.zero_shot_template
        prediction = "\n".join([f"{title(n)}: {inputs[n]}" for n in f.inputs] + [f"{title(f.output)}:"])
        content = template.format(question=f.question(signature), examples=render_examples(demos, f),
                                  output_format=f.output_format(), prediction=prediction,
                                  text=inputs[f.inputs[0]])
        messages = [{"role": "user", "content": content}]
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return messages

    def parse(self, signature, completion: str) -> dict[str, Any]:
        f = self.fields_for(signature)
        if f.yes_no:
            return {f.output: YES if answer_is_yes(completion) else NO}
        if f.labels:
            return {f.output: f.label_of(completion or "")}
        lines = [line.strip() for line in (completion or "").splitlines() if line.strip()]
        return {f.output: lines[0] if lines else ""}

    def is_unparsed(self, signature, completion: str, value: dict) -> bool:
        """No label: a Yes/No answer that starts with neither, an answer naming none of the labels, or nothing."""
        f = self.fields_for(signature)
        if f.yes_no:
            return parse_label_word(re.split(r"[\s,.!:;]", strip_markup(completion), maxsplit=1)[0]) is None
        if f.labels:
            return value.get(f.output) not in f.labels
        return not (completion or "").strip()


class TurnsAdapter(ClassifierAdapter):
    """The same task as `ClassifierAdapter`, as a conversation: the question (and the output format) as the
    system message, each demo as a user turn (``Name: value`` lines) answered by an assistant turn (the label),
    then the input. Small chat models follow this much better than one long prompt (measured on the embedded
    SmolLM2-135M: 7/12 right with 8 demos where the long prompt made it write a new example instead of a label).

    Example:
        >>> sig = dspy.Signature("sentence -> topic", "Which topic is the sentence about?")
        >>> msgs = TurnsAdapter(labels=["food", "sports"]).format(sig, [dspy.Example(sentence="Pasta!", topic="food")],
        ...                                                      {"sentence": "A goal!"})
        >>> [(m["role"], m["content"]) for m in msgs]  # doctest: +NORMALIZE_WHITESPACE
        [('system', 'Which topic is the sentence about? Answer food or sports.'), ('user', 'Sentence: Pasta!'),
         ('assistant', 'food'), ('user', 'Sentence: A goal!')]
    """

    def bind(self, fields: TaskFields) -> "TurnsAdapter":
        return TurnsAdapter(input_fields=list(fields.inputs), output_field=fields.output,
                            labels=fields.labels if fields.labels is not None else (), prefill=self.prefill)

    def format(self, signature, demos: list, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        f = self.fields_for(signature)
        answer = f.output_format().replace(" as labels", "") + "."

        def user(row):
            return "\n".join(f"{title(n)}: {row[n]}" for n in f.inputs)

        messages = [{"role": "system", "content": f"{f.question(signature)} {answer}"}]
        for d in demos:
            messages += [{"role": "user", "content": user(d)}, {"role": "assistant", "content": str(d[f.output])}]
        messages.append({"role": "user", "content": user(inputs)})
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return messages


class TeacherAdapter(OutputIsData, dspy.Adapter):
    """Renders a teacher signature by filling its instructions (the prompt template) with the inputs.

    The whole answer goes to the signature's single output field; `formats` parses the tags out of it.

    Args:
        prefills: Assistant prefill per output field name (e.g. `STEERING_PREFILLS`), prepended to the
            answer before parsing. Engines in ``chat`` prefill mode drop it; the parsers cope either way.
    """

    def __init__(self, prefills: dict[str, str] | None = None):
        super().__init__()
        self.prefills = dict(prefills or {})

    def _prefill(self, signature) -> str:
        return self.prefills.get(next(iter(signature.output_fields)), "")

    def format(self, signature, demos: list, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        messages = [{"role": "user", "content": signature.instructions.format(**inputs)}]
        if self._prefill(signature):
            messages.append({"role": "assistant", "content": self._prefill(signature)})
        return messages

    def parse(self, signature, completion: str) -> dict[str, Any]:
        return {next(iter(signature.output_fields)): self._prefill(signature) + (completion or "")}
