"""The paper's prompt format as a DSPy Adapter, so that small open models parse reliably.

Templates follow the seed's `exam_prompter_cfg` (``instruction``, ``demo_template``,
``exam_template``, ``stub_teaching_items``, ``use_multi_round_conv``). In ``exam_template`` the text after
``[ROLESWITCHING assistant:]`` is an assistant *prefill* the model continues; in a multi-round
``demo_template`` that marker splits each demo into a user and an assistant turn.
"""

from __future__ import annotations

from typing import Any, Callable

import dspy

from .registry import Registry
from .scoring.math import extract_math_answer

exam_prompters = Registry("exam_prompter")

ROLE_SWITCH = "[ROLESWITCHING assistant:]"

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
class TemplateAdapter(dspy.Adapter):
    """Renders `SolveProblem` calls with the paper's templates and parses the continuation.

    Args:
        instruction: Text before the first demo (in the last user turn for multi-round conversations).
        demo_template: Format string for one demo, fields ``{question}``, ``{rationale}``, ``{answer}``.
        exam_template: Format string for the question asked, fields ``{demo}`` and ``{question}``; the text
            after ``[ROLESWITCHING assistant:]`` is the assistant prefill.
        stub_teaching_items: Fixed demos placed before the call's own demos.
        use_multi_round_conv: Demos as user/assistant turns instead of one block of text.
        system: Optional system message.
        answer_marker: Where the rationale ends and the answer starts in the output.
        extract_answer: Function from the raw output to the answer (math by default).

    Example:
        >>> adapter = TemplateAdapter()  # the paper's math prompt
        >>> student = dspy.Predict(SolveProblem)  # doctest: +SKIP
        >>> with dspy.context(adapter=adapter, lm=lm):  # doctest: +SKIP
        ...     student(question="What is 2+3?", demos=[dspy.Example(question=..., rationale=..., answer=...)])
    """

    def __init__(self, instruction: str = PAPER_INSTRUCTION, demo_template: str = PAPER_DEMO_TEMPLATE,
                 exam_template: str = PAPER_EXAM_TEMPLATE, stub_teaching_items: list[dict] | None = None,
                 use_multi_round_conv: bool = False, system: str | None = None,
                 answer_marker: str = "[[Final Answer]]", extract_answer: Callable[[str], str] = extract_math_answer,
                 debug_template: str | None = None):
        super().__init__()
        self.instruction = instruction
        self.demo_template = demo_template
        self.exam_template = exam_template
        self.stub_teaching_items = list(PAPER_STUB_ITEMS if stub_teaching_items is None else stub_teaching_items)
        self.use_multi_round_conv = use_multi_round_conv
        self.system = system
        self.answer_marker = answer_marker
        self.extract_answer = extract_answer
        for name, tpl in (("demo_template", demo_template), ("exam_template", exam_template)):
            if not isinstance(tpl, str):
                raise ValueError(f"{name} must be a string")
        if "{question}" not in exam_template:
            raise ValueError("exam_template must contain {question}")

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
            # as in the seed, the instruction goes into the last user turn
            last_user = self.instruction + user_part.replace("{demo}", "").lstrip("\n").format(question=inputs["question"])
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
