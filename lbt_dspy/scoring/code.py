"""Code answers: extraction from model output, and scoring by the problem's checks in the sandbox.

Problems are the dicts of :mod:`lbt_dspy.data.code` (``entry_point``, ``prompt``, ``visible``,
``hidden`` checks...). Each check runs in its own sandboxed process (:mod:`lbt_dspy.sandbox`), in
parallel, and is judged by :mod:`lbt_dspy.scoring.judge`: where the check is an assertion about
calls of the entry point (1128 of HumanEval's 1133 checks), the child only calls the function on
the check's inputs and returns the results as plain data, and this process evaluates the
assertion; a solution cannot forge that (patched builtins, a lying ``__eq__``, reading its
checks, printing a marker or exiting early all score 0). The other checks run in-process after
the solution and pass only if a fresh nonce is printed after them and the process exits 0.

Scores (as in the paper): V-score = 1.0 iff all visible checks pass; S-score = fraction of the
hidden checks passed.

Example:
    >>> problem = {"task_id": "t", "prompt": "", "entry_point": "add",
    ...            "visible": ["assert add(1, 2) == 3"], "hidden": ["assert add(1, 2) == 3", "assert add(0, 0) == 0"]}
    >>> CodeScorer().score("def add(a, b):\\n    return a + b", problem)
    1.0
    >>> CodeScorer(mode="hidden").score("def add(a, b):\\n    return 3", problem)
    0.5
"""

from __future__ import annotations

import ast
import functools
import logging
import re
import secrets
import textwrap
import threading

from ..data.checks import parse as _parse
from ..data.code import as_problem
from ..errors import LbtError
from ..sandbox import SandboxLimits, run_many
from .base import ExamScorer, exam_scorers
from .judge import CallCheck, assert_program, plan_check

log = logging.getLogger(__name__)

# One process per check: no forks or threads, so memory summed over the program's processes is
# at most memory_mb (+ the sandbox's tmpfs); see docs/sandbox.md.
SCORING_LIMITS = SandboxLimits(max_processes=1)

FINAL_CODE_MARKS = ("[[Final Code]]", "[[DEBUG Code]]")  # the seed's answer markers
# Names generated solutions use without importing them (the seed prepended a similar header).
CODE_HEADER = (
    "from typing import *\n"
    "import math, collections, itertools, functools, heapq, bisect, string, re\n"
    "from collections import *\n"
)
_PY_LANGS = {"", "python", "python3", "py", "py3"}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w.+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)


# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------
def _parses(code: str) -> bool:
    try:
        _parse(code)
        return True
    except (SyntaxError, ValueError):
        return False


def _defines_function(code: str) -> bool:
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return False
    return any(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(tree))


def _fenced_blocks(text: str) -> tuple[list[str], str | None]:
    """Complete fenced blocks in Python (or no) language, and a trailing unterminated one."""
    blocks = [textwrap.dedent(m.group(2)) for m in _FENCE.finditer(text) if m.group(1).lower() in _PY_LANGS]
    tail = None
    last_close = 0
    for m in _FENCE.finditer(text):
        last_close = m.end()
    rest = text[last_close:]
    opened = re.search(r"^[ \t]*```[ \t]*([\w.+-]*)[^\n]*\n", rest, re.M)
    if opened and opened.group(1).lower() in _PY_LANGS:
        tail = textwrap.dedent(rest[opened.end():])
    return blocks, tail


def _bare_code(text: str) -> str:
    """The longest parseable stretch starting at the first line that looks like code."""
    text = text.strip("\n")
    if _parses(text) and _defines_function(text):
        return text.strip()
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"(def |class |import |from |@|async def )", ln)), None)
    if start is None:
        return text.strip() if _parses(text) else ""
    for end in range(len(lines), start, -1):
        chunk = "\n".join(lines[start:end])
        if _parses(chunk):
            return chunk.strip()
    return "\n".join(lines[start:]).strip()


def _pick_block(blocks: list[str]) -> str | None:
    for want in (_defines_function, lambda b: "def " in b, lambda b: b.strip()):
        for block in reversed(blocks):
            if want(block):
                return block.strip("\n")
    return None


def extract_code(text: str) -> str:
    """The code in a model's output.

    Order: the block after the last ``[[Final Code]]`` (or ``[[DEBUG Code]]``) marker (inside it, a
    fenced block or ``$...$`` wrapper is unwrapped); else the last complete fenced Python block
    (```` ```python ```` or a bare ```` ``` ````) that defines a function, else the last such block
    at all; else an unterminated final fence; else bare code (from the first ``def``/``class``/
    ``import`` line, trimmed at the end until it parses). Empty if nothing looks like code.

    Example:
        >>> extract_code("Idea: add.\\n```python\\ndef f(a, b):\\n    return a + b\\n```\\nDone.")
        'def f(a, b):\\n    return a + b'
    """
    if not text:
        return ""
    marks = [(text.rfind(m), m) for m in FINAL_CODE_MARKS if m in text]
    if marks:
        pos, mark = max(marks)
        block = text[pos + len(mark):].lstrip(":").strip("\n")
        block = re.split(r"^\s*\[\[", block, maxsplit=1, flags=re.M)[0]  # a run-on into a new [[Section]]
        blocks, tail = _fenced_blocks(block)
        found = _pick_block(blocks) or tail
        if found is None:
            found = block.strip().strip("$").strip("`")
            found = re.sub(r"^(python3?|py)\n", "", found)
        found = textwrap.dedent(found).strip("\n")
        if found.strip():
            return found if _parses(found) else (_bare_code(found) or found)
    blocks, tail = _fenced_blocks(text)
    picked = _pick_block(blocks)
    if picked is not None:
        return picked
    if tail and "def " in tail:
        return _bare_code(tail)
    return _bare_code(text)


# --------------------------------------------------------------------------------------------
# Running checks
# --------------------------------------------------------------------------------------------
def _defines(code: str, entry_point: str) -> bool:
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return False
    defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(n, defs) and n.name in (entry_point, "Solution") for n in tree.body)


def solution_program(answer: str, problem: dict) -> str:
    """The program under test: a standard import header, the problem's ``prompt`` (helpers and
    the stub), then the answer. An answer that does not define the entry point is taken as a
    completion of the prompt's stub (HumanEval's ``canonical_solution`` style)."""
    prompt = problem.get("prompt") or ""
    entry = problem.get("entry_point") or ""
    if prompt and entry and not _defines(answer, entry):
        return CODE_HEADER + prompt + answer
    return CODE_HEADER + prompt + ("\n\n" if prompt else "") + answer


@functools.lru_cache(maxsize=65536)
def _plan(check: str, entry_point: str) -> CallCheck | None:
    return plan_check(check, entry_point)


def run_checks(answer: str, problem: dict, which: str = "hidden", limits: SandboxLimits | None = None,
               max_workers: int | None = None) -> list[bool]:
    """Run each of the problem's `which` (``"visible"``/``"hidden"``) checks in its own sandbox.

    Returns one bool per check: True when the check ran to the end (its nonce was printed) and
    the process exited 0.

    Example:
        >>> problem = {"entry_point": "f", "hidden": ["assert f(1) == 1", "assert f(1) == 2"]}
        >>> run_checks("def f(x):\\n    return x", problem)
        [True, False]
    """
    return _run_check_list(solution_program(answer, problem), list(problem.get(which) or []),
                           problem.get("entry_point") or "", limits, max_workers)


def _run_check_list(solution: str, checks: list[str], entry_point: str, limits: SandboxLimits | None,
                    max_workers: int | None) -> list[bool]:
    if not checks:
        return []
    plans = [_plan(c, entry_point) for c in checks]
    nonces = [secrets.token_hex(16) for _ in checks]
    codes = [solution if p else assert_program(solution, c, n) for c, p, n in zip(checks, plans, nonces)]
    calls = [(p.target, p.calls) if p else None for p in plans]
    results = run_many(codes, limits or SCORING_LIMITS, max_workers, calls=calls)
    out = []
    for r, p, n in zip(results, plans, nonces):
        if p is not None:
            out.append(r.passed and r.values is not None and p.passed(r.values))
        else:
            out.append(r.passed and f"\n{n}\n" in r.stdout)
    return out


def _normalise(code: str) -> str:
    try:
        tree = _parse(code)
    except (SyntaxError, ValueError):
        return re.sub(r"\s+", " ", code).strip()
    for node in ast.walk(tree):  # docstrings do not change behaviour
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@exam_scorers.register("code")
class CodeScorer(ExamScorer):
    """Scores code answers by running the problem's checks in the sandbox.

    Args:
        mode: ``"visible"``: :meth:`score` is the V-score (1.0 iff all visible checks pass, the
            LbT exam score); ``"hidden"``: :meth:`score` is the S-score (fraction of hidden checks).
        limits: Per-check :class:`~lbt_dspy.sandbox.SandboxLimits`, or a dict of its fields
            (default :data:`SCORING_LIMITS`: one process, so memory is bounded by ``memory_mb``).
        max_workers: Checks run at once (default: CPU cores).

    The reference passed to :meth:`score` is a problem dict (see :mod:`lbt_dspy.data.code`), a raw
    HumanEval or LeetCode row, or test source code. Results are cached per (answer, check).

    Example:
        >>> problem = {"entry_point": "inc", "visible": ["assert inc(1) == 2"], "hidden": ["assert inc(1) == 2"]}
        >>> CodeScorer().score(CodeScorer().extract("```python\\ndef inc(x):\\n    return x + 1\\n```"), problem)
        1.0
    """

    def __init__(self, mode: str = "visible", limits: SandboxLimits | dict | None = None,
                 max_workers: int | None = None):
        if mode not in ("visible", "hidden"):
            raise LbtError(f"code scorer: mode must be 'visible' or 'hidden', got {mode!r}")
        self.mode = mode
        if isinstance(limits, dict):
            try:
                limits = SandboxLimits(**limits)
            except (TypeError, ValueError) as exc:
                raise LbtError(f"code scorer: limits: {exc}") from None
        self.limits = limits or SCORING_LIMITS
        self.max_workers = max_workers
        self._cache: dict[tuple[str, str], bool] = {}
        self._lock = threading.Lock()

    def reference(self, item: dict):
        """The problem itself: its checks, entry point and prompt are what a code answer is run against."""
        return item

    def extract(self, text: str) -> str:
        return extract_code(text)

    def check_results(self, answer: str, reference, which: str = "hidden") -> list[bool]:
        """One bool per `which` check of `reference` (cached)."""
        problem = as_problem(reference)
        checks = list(problem.get(which) or [])
        if not checks:
            log.warning("code scorer: problem %r has no %s checks; scoring 0", problem.get("task_id"), which)
            return []
        solution = solution_program(answer or "", problem)
        keys = [(solution, c) for c in checks]  # visible checks are also hidden ones: shared
        with self._lock:
            todo = [i for i, k in enumerate(keys) if k not in self._cache]
        if todo:
            fresh = _run_check_list(solution, [checks[i] for i in todo], problem.get("entry_point") or "",
                                    self.limits, self.max_workers)
            with self._lock:
                for i, ok in zip(todo, fresh):
                    self._cache[keys[i]] = ok
        with self._lock:
            return [self._cache[k] for k in keys]

    def v_score(self, answer: str, reference) -> float:
        """1.0 iff every visible check passes (0.0 when there are none)."""
        results = self.check_results(answer, reference, "visible")
        return float(bool(results) and all(results))

    def s_score(self, answer: str, reference) -> float:
        """Fraction of the hidden checks passed (0.0 when there are none)."""
        results = self.check_results(answer, reference, "hidden")
        return sum(results) / len(results) if results else 0.0

    def score(self, answer: str, reference) -> float:
        return self.v_score(answer, reference) if self.mode == "visible" else self.s_score(answer, reference)

    def judge(self, answer: str, reference) -> dict:
        """The hidden-test S-score of a teacher answer (M1 judges its picks by it, never selects by it)."""
        return {"s_score": self.s_score(answer, reference)}

    def equivalent(self, a: str, b: str) -> bool:
        """Same code up to formatting, comments and docstrings."""
        return _normalise(a) == _normalise(b)
