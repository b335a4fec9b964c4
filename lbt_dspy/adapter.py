"""The paper's prompt format as a DSPy Adapter, so that small open models parse reliably.

Templates follow the seed's `exam_prompter_cfg` (``instruction``, ``demo_template``,
``exam_template``, ``stub_teaching_items``, ``use_multi_round_conv``). In ``exam_template`` the text after
``[ROLESWITCHING assistant:]`` is an assistant *prefill* the model continues; in a multi-round
``demo_template`` that marker splits each demo into a user and an assistant turn.

The messages equal the seed's (``ExamPrompter.make_exam_prompt_chat_template``): the system message
"You are a helpful assistant.", the demo turns, the instruction + exam text as the last user turn, and the
prefill as a trailing assistant message. Unlike the seed's fastchat path, multi-round demos are sent once
(the seed appended them twice there). The seed's prompter defaults (no instruction, no stub shots) apply
as soon as a config gives its own ``demo_template`` or ``exam_template``; with neither, the paper's
whole math prompt is used.
"""

from __future__ import annotations

import string
from typing import Any, Callable

import dspy

from .model_output import OutputIsData
from .registry import Registry
from .scoring.math import extract_math_answer, marker_pattern

exam_prompters = Registry("exam_prompter")

ROLE_SWITCH = "[ROLESWITCHING assistant:]"
SEED_SYSTEM = "You are a helpful assistant."  # the seed sends it on every path (API and HF)

PAPER_INSTRUCTION = (
    "Your task is to answer the last question below. Give step by step reasoning before you answer. "
    "When you're ready to answer, please wrap your answer and conclude using the format\n'''\n"
    "[[Final Answer]]:\n$ANSWER$\n'''\n\n\n\n"
)
PAPER_DEMO_TEMPLATE = ("[[Question]]:\n{question}\n\n[[Solution]]:\nLet's think step by step.\n\n{rationale}\n\n"
                       "[[Final Answer]]:\n${answer}$\n")
PAPER_EXAM_TEMPLATE = ("{demo}\n\n\n[[Question]]:\n{question}\n\n" + ROLE_SWITCH +
                       "[[Solution]]:\nLet's think step by step.\n\n")
# The paper's four Minerva-style stub shots (Prompt 1).
PAPER_STUB_ITEMS = [
    {"question": "Find the domain of the expression $\\frac{\\sqrt{x-2}}{\\sqrt{5-x}}$.",
     "rationale": "The expressions inside each square root must be non-negative. Therefore, $x-2 \\ge 0$, so "
                  "$x\\ge2$, and $5 - x \\ge 0$, so $x \\le 5$. Also, the denominator cannot be equal to zero, so "
                  "$5-x>0$, which gives $x<5$. Therefore, the domain of the expression is $\\boxed{[2,5)}$.",
     "answer": "[2,5)"},
    {"question": "If $\\det \\mathbf{A} = 2$ and $\\det \\mathbf{B} = 12,$ then find $\\det (\\mathbf{A} \\mathbf{B}).$",
     "rationale": "We have that $\\det (\\mathbf{A} \\mathbf{B}) = (\\det \\mathbf{A})(\\det \\mathbf{B}) = "
                  "(2)(12) = \\boxed{24}.$", "answer": "24"},
    {"question": "Terrell usually lifts two 20-pound weights 12 times. If he uses two 15-pound weights instead, "
                 "how many times must Terrell lift them in order to lift the same total weight?",
     "rationale": "If Terrell lifts two 20-pound weights 12 times, he lifts a total of $2\\cdot 12\\cdot20=480$ "
                  "pounds of weight. If he lifts two 15-pound weights instead for $n$ times, he will lift a total of "
                  "$2\\cdot15\\cdot n=30n$ pounds of weight. Equating this to 480 pounds, we can solve for $n$: "
                  "\\begin{align*} 30n&=480\\\\ \\Rightarrow\\qquad n&=480/30=\\boxed{16} \\end{align*}",
     "answer": "16"},
    {"question": "If the system of equations\n\n\\begin{align*}\n6x-4y&=a,\\\\\n6y-9x &=b.\n\\end{align*}has a "
                 "solution $(x, y)$ where $x$ and $y$ are both nonzero, find $\\frac{a}{b},$ assuming $b$ is nonzero.",
     "rationale": "If we multiply the first equation by $-\\frac{3}{2}$, we obtain $$6y-9x=-\\frac{3}{2}a.$$ Since we "
                  "also know that $6y-9x=b$, we have $$-\\frac{3}{2}a=b\\Rightarrow\\frac{a}{b}=\\boxed{-\\frac{2}{3}}.$$",
     "answer": "-\\frac{2}{3}"},
]


@exam_prompters.register("basic")
class TemplateAdapter(OutputIsData, dspy.Adapter):
    """Renders `SolveProblem` calls with the paper's templates and parses the continuation.

    Whatever the model returns is parsed (`lbt_dspy.model_output`): an empty or format-less answer is an
    answer (``unparsed=True`` when the answer marker or the answer after it is missing), never an error.

    Args:
        instruction: Text before the first demo (in the last user turn for multi-round conversations);
            default: the paper's, or "" when the templates are one's own (the seed's default).
        demo_template: Format string for one demo, fields ``{question}``, ``{rationale}``, ``{answer}``.
        exam_template: Format string for the question asked, fields ``{demo}`` and ``{question}``; the text
            after ``[ROLESWITCHING assistant:]`` is the assistant prefill.
        stub_teaching_items: Fixed demos placed before the call's own demos; default: the paper's four math
            shots, or none when the templates are one's own (the seed's default).
        use_multi_round_conv: Demos as user/assistant turns instead of one block of text.
        system: The system message ("You are a helpful assistant.", as the seed sends; None: no system message).
        answer_marker: Where the rationale ends and the answer starts in the output.
        extract_answer: Function from the raw output to the answer (math by default).
        debug_template: Accepted from seed configs and unused, as in the seed's ``basic`` prompter (a warning says so).

    Example:
        >>> adapter = TemplateAdapter()  # the paper's math prompt
        >>> student = dspy.Predict(SolveProblem)  # doctest: +SKIP
        >>> with dspy.context(adapter=adapter, lm=lm):  # doctest: +SKIP
        ...     student(question="What is 2+3?", demos=[dspy.Example(question=..., rationale=..., answer=...)])
    """

    def __init__(self, instruction: str | None = None, demo_template: str | None = None,
                 exam_template: str | None = None, stub_teaching_items: list[dict] | None = None,
                 use_multi_round_conv: bool = False, system: str | None = SEED_SYSTEM,
                 answer_marker: str = "[[Final Answer]]", extract_answer: Callable[[str], str] = extract_math_answer,
                 debug_template: str | None = None):
        super().__init__()
        own_templates = demo_template is not None or exam_template is not None
        # The seed's ExamPrompter defaults (no instruction, no stub shots) once templates are one's own.
        self.instruction = instruction if instruction is not None else ("" if own_templates else PAPER_INSTRUCTION)
        self.demo_template = PAPER_DEMO_TEMPLATE if demo_template is None else demo_template
        self.exam_template = PAPER_EXAM_TEMPLATE if exam_template is None else exam_template
        default_stubs = [] if own_templates else PAPER_STUB_ITEMS
        self.stub_teaching_items = [dict(d) for d in (default_stubs if stub_teaching_items is None else stub_teaching_items)]
        self.use_multi_round_conv = use_multi_round_conv
        self.system = system
        self.answer_marker = answer_marker
        self.extract_answer = extract_answer
        self.debug_template = debug_template  # kept like the seed's `basic` prompter, which never used it
        if debug_template is not None:
            import logging

            logging.getLogger(__name__).warning(
                "exam_prompter_cfg.debug_template: not used (the seed's `basic` prompter stored it but never used it)")
        for name, tpl in (("instruction", self.instruction), ("demo_template", self.demo_template),
                          ("exam_template", self.exam_template)):
            if not isinstance(tpl, str):
                raise ValueError(f"{name} must be a string")
        _check_fields("demo_template", self.demo_template, {"question", "rationale", "answer"})
        _check_fields("exam_template", self.exam_template, {"demo", "question"})
        if "{question}" not in self.exam_template:
            raise ValueError("exam_template must contain {question}")
        # As in the seed: the marker is required in a multi-round demo template and refused otherwise.
        if use_multi_round_conv and ROLE_SWITCH not in self.demo_template:
            raise ValueError(f"use_multi_round_conv: demo_template must contain {ROLE_SWITCH} (where the turn switches)")
        if not use_multi_round_conv and ROLE_SWITCH in self.demo_template:
            raise ValueError(f"demo_template contains {ROLE_SWITCH} but use_multi_round_conv is false")
        for n, item in enumerate(self.stub_teaching_items):
            if not isinstance(item, dict):
                raise ValueError(f"stub_teaching_items[{n}]: expected a mapping with question/rationale/answer")
            missing = _fields(self.demo_template) - set(item)
            if missing:
                raise ValueError(f"stub_teaching_items[{n}]: missing {', '.join(sorted(missing))} (used by demo_template)")

    # --- formatting ------------------------------------------------------------------------------
    def _demo_items(self, demos: list) -> list[dict]:
        items = [dict(d) for d in self.stub_teaching_items]
        for d in demos:
            items.append({k: d[k] for k in ("question", "rationale", "answer") if k in d})
        return items

    def format(self, signature, demos: list, inputs: dict[str, Any]) -> list[dict[str, Any]]:
        items = self._demo_items(demos)
        user_part, _, prefill = self.exam_template.partition(ROLE_SWITCH)
        messages: list[dict[str, Any]] = [{"role": "system", "content": self.system}] if self.system else []
        if self.use_multi_round_conv:
            for item in items:
                demo_user, _, demo_assistant = self.demo_template.format(**item).partition(ROLE_SWITCH)
                messages.append({"role": "user", "content": demo_user})
                messages.append({"role": "assistant", "content": demo_assistant})
            # as in the seed, the instruction goes into the last user turn; the demos are turns, not {demo}
            if "{demo}" in user_part:
                user_part = user_part.replace("{demo}", "").lstrip("\n")
            last_user = self.instruction + user_part.format(question=inputs["question"])
        else:
            demo_text = "\n\n\n".join(self.demo_template.format(**item) for item in items)
            last_user = self.instruction + user_part.format(demo=demo_text, question=inputs["question"])
        messages.append({"role": "user", "content": last_user})
        if prefill:
            messages.append({"role": "assistant", "content": prefill})
        return messages

    # --- parsing ---------------------------------------------------------------------------------
    def parse(self, signature, completion: str) -> dict[str, Any]:
        text = completion or ""
        rationale = text.split(self.answer_marker)[0].strip() if self.answer_marker else text.strip()
        return {"rationale": rationale, "answer": self.extract_answer(text)}

    def is_unparsed(self, signature, completion: str, value: dict) -> bool:
        """The format was not followed: no answer marker (when there is one) or nothing after it."""
        if self.answer_marker:
            marks = list(marker_pattern(self.answer_marker).finditer(completion))
            if not marks:
                return True
            if not completion[marks[-1].end():].strip().lstrip(":").strip():
                return True  # a bare marker with nothing after it
        return not str(value.get("answer") or "").strip()


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def _check_fields(name: str, template: str, allowed: set[str]) -> None:
    try:
        used = _fields(template)
    except ValueError as exc:
        raise ValueError(f"{name}: not a valid format string ({exc})") from None
    bad = sorted(used - allowed)
    if bad:
        raise ValueError(f"{name}: unknown field {{{bad[0]}}} (fields: {', '.join(sorted(allowed))})")


class _SeedOnlyPrompter:
    """A seed prompter lbt does not provide: building one is a one-line error naming what to use instead."""

    message = ""

    def __init__(self, **kwargs):
        from .errors import LbtError

        raise LbtError(self.message)


@exam_prompters.register("code_debug")
class _CodeDebugPrompter(_SeedOnlyPrompter):
    message = ("exam_prompter_type code_debug: not supported (the seed's debugging re-prompt of a student's own "
               "code); use exam_prompter_type basic")


@exam_prompters.register("code_pipeline4")
class _CodePipeline4Prompter(_SeedOnlyPrompter):
    message = ("exam_prompter_type code_pipeline4: not supported (the seed's choose-among-answers prompt); "
               "use exam_prompter_type basic")
