"""Checks: a problem's tests split into independent snippets, and the ones a model may see.

A *check* is a self-contained Python snippet (a string) that raises if the solution is wrong; the
problem dicts of :mod:`lbt_dspy.data.code` hold them in ``visible`` and ``hidden``.
:func:`split_checks` makes them from a HumanEval ``check`` function or a flat LeetCode test;
:func:`visible_checks` picks those matching the prompt's examples. How a check is *judged* is
:mod:`lbt_dspy.scoring.judge`'s business.

Example:
    >>> split_checks("def check(candidate):\\n    assert candidate(1) == 2\\n", "inc")
    ['candidate = inc\\nassert candidate(1) == 2']
"""

from __future__ import annotations

import ast
import re
import textwrap
import threading

__all__ = ["split_checks", "visible_checks", "parse"]

_AST_LOCK = threading.Lock()


def parse(source: str, *args, **kwargs) -> ast.AST:
    """`ast.parse` under a lock. CPython 3.11 keeps the AST constructor's recursion depth in state
    shared by all threads, so concurrent parses (answer extraction in the LM worker threads, scoring
    in the main thread) fail now and then with "SystemError: AST constructor recursion depth
    mismatch" (python/cpython#106905). The lock cannot cover every AST built elsewhere (an import compiling
    a module in another thread), so that error, which is transient, is retried a few times."""
    for attempt in range(5):
        try:
            with _AST_LOCK:
                return ast.parse(source, *args, **kwargs)
        except SystemError as exc:
            if "recursion depth mismatch" not in str(exc) or attempt == 4:
                raise
    raise AssertionError("unreachable")


# --------------------------------------------------------------------------------------------
# Splitting a test into independent checks
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
        tree = parse(test)
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


# --------------------------------------------------------------------------------------------
# Visible checks: those matching the prompt's examples
# --------------------------------------------------------------------------------------------
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
            node = parse(prompt[m.start():end].strip(), mode="eval").body
        except (SyntaxError, ValueError, MemoryError, RecursionError):
            continue
        if isinstance(node, ast.Call):
            keys.add(_call_key(node))
    return keys


def _calls_in(check: str, names: tuple[str, ...]) -> set:
    try:
        tree = parse(check)
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
