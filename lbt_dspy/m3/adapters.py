"""The paper's plain-text prompts as DSPy adapters: one for the Yes/No classifier, one for the teacher.

Small open models do not follow DSPy's ``[[ ## field ## ]]`` chat format, and the paper's numbers come from
its own prompts, so both adapters render the patch's prompts verbatim and parse the raw answer.
"""

from __future__ import annotations

from typing import Any

import dspy

from .formats import NO, YES, answer_is_yes, render_examples

#: The patch's ``prompts/{liar,fallacy}.md`` with ``{{ icl_examples }}`` / ``{{ text }}`` filled in.
PAPER_CLASSIFY_TEMPLATE = ("# Task\n{question}\n\n# Examples\n{examples}\n\n# Output format\n"
                           "Answer Yes or No as labels\n\n# Prediction\nText: {text}\nLabel:")
#: The same prompt without demos (zero-shot baseline).
ZERO_SHOT_TEMPLATE = ("# Task\n{question}\n\n# Output format\nAnswer Yes or No as labels\n\n# Prediction\n"
                      "Text: {text}\nLabel:")

#: Assistant prefills that steer small models into the expected layout (`TeacherAdapter(prefills=...)`).
STEERING_PREFILLS = {"examples": "<START>\nText:", "reasons": "<START>"}


class ClassifierAdapter(dspy.Adapter):
    """Renders a text -> label call as the patch's classification prompt; parses "Yes..." as Yes.

    The task question is the signature's instructions; demos (``text``/``label``) fill the ``# Examples``
    section. The answer is Yes iff it starts with "yes" (the patch: ``response.upper().startswith("YES")``).

    Args:
        template: The prompt with ``{question}``, ``{examples}`` and ``{text}``.
        zero_shot_template: The prompt used when there are no demos.
        input_field: The signature's input field holding the text.
        output_field: The signature's output field receiving "Yes"/"No".
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
    """

    def __init__(self, template: str = PAPER_CLASSIFY_TEMPLATE, zero_shot_template: str = ZERO_SHOT_TEMPLATE,
                 input_field: str = "text", output_field: str = "label", prefill: str = ""):
        super().__init__()
        self.template = template
        self.zero_shot_template = zero_shot_template
        self.input_field = input_field
        self.output_field = output_field
        self.prefill = prefill

    def format(self, signature, demos: list, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        demos = [{"text": d[self.input_field], "label": d[self.output_field]} for d in demos]
        template = self.template if demos else self.zero_shot_template
        content = template.format(question=signature.instructions, examples=render_examples(demos),
                                  text=inputs[self.input_field])
        messages = [{"role": "user", "content": content}]
        if self.prefill:
            messages.append({"role": "assistant", "content": self.prefill})
        return messages

    def parse(self, signature, completion: str) -> dict[str, Any]:
        return {self.output_field: YES if answer_is_yes(completion) else NO}


class TeacherAdapter(dspy.Adapter):
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
