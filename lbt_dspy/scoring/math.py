"""Math answers: extraction from model output and equivalence by math-verify (not string rules)."""

from __future__ import annotations

import re
from functools import lru_cache

from . import math_checks
from .base import ExamScorer, exam_scorers

FINAL_ANSWER_MARK = "[[Final Answer]]"


@lru_cache(maxsize=32)
def marker_pattern(marker: str) -> re.Pattern:
    """A marker such as ``[[Final Answer]]`` as small models write it: one or two brackets on either side, any
    case and spacing, the colons after it (``[[Final Answer]: 10`` and ``[Final answer]:: 10`` seen in the
    embedded model's answers).

    Example:
        >>> bool(marker_pattern("[[Final Answer]]").search("so.\\n\\n[[Final Answer]: 10"))
        True
    """
    words = r"\s*".join(re.escape(w) for w in marker.strip("[] ").split())
    return re.compile(r"\[\[?\s*" + words + r"\s*\]?\]?[ \t]*:*", re.I)


_FINAL_ANSWER = marker_pattern(FINAL_ANSWER_MARK)
_MAX_ANSWER_CHARS = math_checks.MAX_ANSWER_CHARS  # a runaway "answer" is not worth a sympy parse


def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces balanced; None if absent."""
    start = max(text.rfind("\\boxed{"), text.rfind("\\fbox{"))
    if start < 0:
        return None
    i = text.index("{", start) + 1
    depth = 1
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i:j]
    return None


_ANSWER_PREFIX = re.compile(r"^(the )?(correct |final )?answer( is)?\s*[:=]?\s*", re.I)


def _strip_wrappers(ans: str) -> str:
    """Remove the decoration around an answer: quotes, $...$, \\(...\\), "the answer is", a final period."""
    prev = None
    while ans != prev:
        prev = ans
        ans = ans.strip().strip("'`").strip().rstrip(".").strip()
        ans = _ANSWER_PREFIX.sub("", ans)
        if len(ans) >= 2 and ans.startswith("$") and ans.endswith("$"):
            ans = ans[1:-1]
        if ans.startswith("\\(") and ans.endswith("\\)"):
            ans = ans[2:-2]
    return ans.strip()


def _last_line_answer(line: str) -> str:
    math = re.findall(r"\$([^$]+)\$", line)
    if math:
        return _strip_wrappers(math[-1])
    said = re.findall(r"answer is\s*[:=]?\s*(.+)", line, flags=re.I)
    line = said[-1] if said else line
    if len(line.split()) > 2:  # a sentence ("so she has 30 - 5 = 15 cookies left"): its last number
        numbers = re.findall(r"-?\d+(?:\.\d+)?(?:/\d+)?", line)
        if numbers:
            return numbers[-1]
    return _strip_wrappers(line.strip("[]"))


def extract_math_answer(text: str) -> str:
    """The final answer in a model's output: the ``[[Final Answer]]`` block (the marker as `marker_pattern` reads
    it), else the last
    ``\\boxed{}``, else a ``Final answer:`` line, else the last non-empty line. Empty if nothing.

    Example:
        >>> extract_math_answer("so x=2.\\n\\n[[Final Answer]]:\\n$\\\\frac{1}{2}$\\n")
        '\\\\frac{1}{2}'
    """
    if not text:
        return ""
    marks = list(_FINAL_ANSWER.finditer(text))
    if marks:
        block = text[marks[-1].end():].lstrip(":").strip()
        block = block.split("[[")[0]  # a model that runs on into a new [[Question]]
        boxed = last_boxed(block)
        if boxed is not None:
            return _strip_wrappers(boxed)
        lines = [ln for ln in block.splitlines() if ln.strip().strip("'`$")]
        if lines:
            return _strip_wrappers(lines[0])
        if not block.strip():
            return ""  # a bare marker: nothing was answered
    boxed = last_boxed(text)
    if boxed is not None:
        return _strip_wrappers(boxed)
    found = re.findall(r"final answer\s*(?:is)?\s*[:=]?\s*(.+)", text, flags=re.I)
    if found:
        return _last_line_answer(found[-1])
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return _last_line_answer(lines[-1]) if lines else ""


def answers_equivalent(reference: str, answer: str) -> bool:
    """True when `answer` equals `reference` mathematically (math-verify), or as normalised text.

    Equal text and two integers are settled here, at once; the rest is math-verify's parse, in a worker
    process (`lbt_dspy.scoring.math_checks`: off this process's GIL, with timeouts in every thread), and its
    verdict is cached: a pair of answers met again is not parsed again.

    Example:
        >>> answers_equivalent("\\\\frac{1}{2}", "0.5")
        True
    """
    if not answer or not reference:
        return False
    if _norm_text(reference) == _norm_text(answer):
        return True
    both = _plain_number(reference), _plain_number(answer)
    if None not in both:  # two integers: compared exactly, as math-verify would, without its parse
        return both[0] == both[1]
    return _checked(reference[:_MAX_ANSWER_CHARS], answer[:_MAX_ANSWER_CHARS])


@lru_cache(maxsize=8192)
def _checked(reference: str, answer: str) -> bool:
    return math_checks.check(reference, answer)


_PLAIN_INTEGER = re.compile(r"[-+]?\d{1,300}")


def _plain_number(s: str) -> int | None:
    """`s` as an integer when it is a plain integer numeral (``42``, ``-7``, ``007``), else None. math-verify
    parses every answer (about 0.6 ms a check here, most of the framework's time per LM call in
    `eval/bench_overhead.py`); two integers it compares exactly, as this does. Decimals go to math-verify (it
    rounds: 0.333333 equals 0.3333333 there), as does anything else (fractions, LaTeX, units, ``1,000``);
    `tests/test_math_scoring.py` checks the two agree."""
    s = s.strip()
    return int(s) if _PLAIN_INTEGER.fullmatch(s) else None


_TEXT_COMMAND = re.compile(r"\\text\{([^{}]*)\}")
_SPACING_COMMAND = re.compile(r"\\(left|right|!|,|;)")
_WHITESPACE = re.compile(r"\s+")


def _norm_text(s: str) -> str:
    if "\\" in s:  # both patterns start with a backslash
        s = _TEXT_COMMAND.sub(r"\1", s)
        s = _SPACING_COMMAND.sub("", s)
    return _WHITESPACE.sub("", s).strip("$.").lower()


@exam_scorers.register("math")
class MathScorer(ExamScorer):
    """Scores math answers: 1.0 when the extracted answer is equivalent to the reference, else 0.0.

    Args:
        recall_mode: The seed's recall mode: 1.0 when the (normalised) reference occurs anywhere in the
            (normalised) answer, e.g. ``"x=5 or x=7"`` recalls ``5``; equivalence is not checked then.

    Example:
        >>> MathScorer().score("0.5", "\\\\frac12")
        1.0
        >>> MathScorer(recall_mode=True).score("5 \\\\text{ or } 7", "7")
        1.0
    """

    def __init__(self, recall_mode: bool = False):
        self.recall_mode = recall_mode

    def extract(self, text: str) -> str:
        return extract_math_answer(text)

    def score(self, answer: str, reference) -> float:
        if self.recall_mode:
            ref = _norm_text(str(reference))
            return float(bool(ref) and ref in _norm_text(answer or ""))
        return float(answers_equivalent(str(reference), answer))

    def equivalent(self, a: str, b: str) -> bool:
        return answers_equivalent(a, b)
