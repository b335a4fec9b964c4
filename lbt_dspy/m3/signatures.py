"""M3 signatures: the Yes/No classifier (the student program) and the teacher's three prompts.

The teacher prompts are those of the LbT patch of ProTeGi/APO (``lbt/patch/lmops-lbtm3.patch``): write K
in-context examples, give reasons why the current examples led to the failure cases, rewrite the examples
given a reason. Each teacher signature's *instructions are its prompt template*: `TeacherAdapter` fills the
``{placeholders}`` with the input fields and sends the result as one user message, as the patch does.

One addition to the paper's prompts: the teacher is told to write each example as ``Text: ...`` /
``Label: Yes|No``, because the examples become structured DSPy demos (``dspy.Example(text=..., label=...)``)
instead of a free-text prompt section. Other programs get the same prompts with their own fields and labels
(`fields.TaskFields`: ``example_kinds`` and ``example_format``); for the paper's Yes/No program they read
exactly as before.
"""

from __future__ import annotations

import dspy

#: Appended to the write/rewrite prompts so examples parse into demos (not in the paper's prompts).
EXAMPLE_FORMAT = ('Write each example as a line "Text: ..." followed by a line "Label: Yes" or "Label: No".')


class Classify(dspy.Signature):
    """Answer the question about the text with Yes or No."""

    text: str = dspy.InputField(desc="the text to classify")
    label: str = dspy.OutputField(desc="Yes or No")


def make_classifier(question: str) -> dspy.Predict:
    """The student program of a task: ``dspy.Predict(Classify)`` whose instructions are the task's question.

    Example:
        >>> program = make_classifier("Is this statement a lie?")
        >>> program.signature.instructions
        'Is this statement a lie?'
    """
    return dspy.Predict(Classify.with_instructions(question))


class GenerateExamples(dspy.Signature):
    """I'm trying to write {num_examples} in-context learning examples for a few-shot classifier. The classifier will answer this question: "{question}"

I need a list of {num_examples} {example_kinds}learning examples. {example_format} Start and end the list of examples with <START> and <END>."""

    question: str = dspy.InputField(desc="the classifier's question")
    num_examples: int = dspy.InputField(desc="K, how many examples to write")
    example_kinds: str = dspy.InputField(desc="'positive and negative ' (Yes/No), 'labelled ' or ''")
    example_format: str = dspy.InputField(desc="how to lay out one example")
    examples: str = dspy.OutputField(desc="the examples between <START> and <END>")


class ReflectOnFailures(dspy.Signature):
    """I'm trying to write {num_examples} in-context learning examples for a few-shot classifier. The classifier will answer this question: "{question}"

My current {num_examples} in-context learning examples are: "{current_examples}"

But with these examples, the classifier got the following cases wrong:
{failures}

Give {num_reasons} reasons why these examples could have gotten these cases wrong. Wrap each reason with <START> and <END>"""

    question: str = dspy.InputField(desc="the classifier's question")
    num_examples: int = dspy.InputField(desc="K")
    current_examples: str = dspy.InputField(desc="the current examples, rendered as in the classifier prompt")
    failures: str = dspy.InputField(desc="the students' failure cases")
    num_reasons: int = dspy.InputField(desc="how many reasons to give")
    reasons: str = dspy.OutputField(desc="reasons, each between <START> and <END>")


class RewriteExamples(dspy.Signature):
    """I'm trying to write {num_examples} in-context learning examples for a few-shot classifier. The classifier will answer this question: "{question}"

My current {num_examples} in-context learning examples are: "{current_examples}"

But these examples get the following cases wrong:
{failures}

Based on these failure cases, the problem with the current in-context examples is that {reason}

Based on the above information, I need a new list of {num_examples} improved {example_kinds}learning examples. {example_format} Start and end the list of new examples with <START> and <END>."""

    question: str = dspy.InputField(desc="the classifier's question")
    num_examples: int = dspy.InputField(desc="K")
    current_examples: str = dspy.InputField(desc="the current examples")
    failures: str = dspy.InputField(desc="the failure cases the reason explains")
    reason: str = dspy.InputField(desc="one reason from the reflection")
    example_kinds: str = dspy.InputField(desc="'positive and negative ' (Yes/No), 'labelled ' or ''")
    example_format: str = dspy.InputField(desc="how to lay out one example")
    examples: str = dspy.OutputField(desc="the new examples between <START> and <END>")
