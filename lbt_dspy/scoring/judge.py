"""Judging a check without trusting the solution.

A *check* (see :mod:`lbt_dspy.data.checks`) is a snippet that raises if the solution is wrong.
:func:`plan_check` turns a check into a :class:`CallCheck` when it can: an ``assert`` whose calls
of the function under test have arguments the host can compute (literals, names bound to literals,
arithmetic on them), and whose remaining expression uses only comparisons, arithmetic, containers
and a few pure builtins (``abs``, ``len``, ``sorted``, ``math.isclose``...). Then the sandboxed child
only *calls* the function on those arguments and sends the results back as plain data (see
:mod:`lbt_dspy.sandbox.bootstrap`); the host evaluates the assertion on the decoded values. The
expected values never enter the child, and what comes back is data (lists, ints, strings...), not
objects, so a solution that patches ``exec``/``compile``, reads its checks, prints a marker, exits
early or returns an object whose ``__eq__`` always says True cannot pass. Checks that are not of
this shape (loops over random inputs, helper functions, ``try``/``except``) are run in-process
with a nonce marker (:func:`assert_program`): a solution can cheat those.

Example:
    >>> plan = plan_check("candidate = f\\nassert candidate(2, x=[1]) == 5", "f")
    >>> plan.calls, plan.passed([5])
    ([[[2], {'x': [1]}]], True)
"""

from __future__ import annotations

import ast
import builtins
import copy
import math
from dataclasses import dataclass

from ..data.checks import parse
from ..sandbox.bootstrap import CallFailed, decode_value, encode_value

__all__ = ["plan_check", "CallCheck", "assert_program"]


# --------------------------------------------------------------------------------------------
# Judging: a check as calls (run in the sandbox) plus an assertion (evaluated here)
# --------------------------------------------------------------------------------------------
# What the host-side assertion may use besides the call results. All pure; no attribute access
# except these `math` functions, no names starting with "_".
_SAFE_FUNCS = {name: getattr(builtins, name) for name in (
    "abs", "all", "any", "bool", "dict", "float", "frozenset", "int", "len", "list", "max", "min", "round",
    "set", "sorted", "str", "sum", "tuple", "reversed", "range", "enumerate", "zip")}
_SAFE_MATH = {"isclose", "fabs", "sqrt", "floor", "ceil", "isnan", "isinf", "prod", "pi", "e", "inf", "nan"}
_SAFE_NODES = (ast.Expression, ast.Compare, ast.BoolOp, ast.UnaryOp, ast.BinOp, ast.Constant, ast.List,
               ast.Tuple, ast.Set, ast.Dict, ast.Name, ast.Load, ast.Call, ast.keyword, ast.Subscript, ast.Slice,
               ast.IfExp, ast.Attribute, ast.Starred, ast.cmpop, ast.boolop, ast.unaryop, ast.operator,
               ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp, ast.comprehension, ast.Store)
_CALL_VAR = "_lbt_r"  # the name the i-th call's result gets in the host-side assertion


@dataclass
class CallCheck:
    """A check split into calls of the function under test and an assertion over their results.

    Args:
        target: What is called: ``"f"`` (a module-level function) or ``"Solution.f"`` (a method of a
            fresh ``Solution()`` per call).
        calls: One ``[args, kwargs]`` per call, as plain data (the child decodes them).
        assertion: The assert's expression with the i-th call replaced by ``_lbt_r<i>``.
        env: Names the assertion may read besides the results (setup literals, ``math``).
        source: The check it came from.

    Example:
        >>> plan = plan_check("assert abs(candidate(2.0) - 1.0) < 1e-6", "candidate")
        >>> plan.passed([1.0000001]), plan.passed([1.5]), plan.passed([{"error": "raised"}])
        (True, False, False)
    """

    target: str
    calls: list
    assertion: ast.Expression
    env: dict
    source: str = ""

    def passed(self, results: list) -> bool:
        """Does the assertion hold for these call results (plain data, as decoded from the child)?"""
        if len(results) != len(self.calls) or any(isinstance(r, CallFailed) for r in results):
            return False  # a call that raised (or returned an object) fails, even under `!=` or `or`
        names = dict(self.env)
        names.update({f"{_CALL_VAR}{i}": r for i, r in enumerate(results)})
        try:
            code = compile(self.assertion, "<check>", "eval")
            return bool(eval(code, {"__builtins__": {}, **_SAFE_FUNCS}, names))  # noqa: S307 - whitelisted AST only
        except Exception:  # e.g. a result of the wrong type: the check fails, as it would in place
            return False


class _NotPlannable(Exception):
    pass


def _safe(node: ast.AST, names: set) -> None:
    """Raise unless `node` uses only whitelisted syntax, names and functions."""
    names = set(names) | {t.id for c in ast.walk(node) if isinstance(c, ast.comprehension)
                          for t in ast.walk(c.target) if isinstance(t, ast.Name)}
    for n in ast.walk(node):
        if not isinstance(n, _SAFE_NODES):
            raise _NotPlannable(type(n).__name__)
        if isinstance(n, ast.Name) and n.id not in names and n.id not in _SAFE_FUNCS:
            raise _NotPlannable(n.id)
        if isinstance(n, ast.Attribute):
            if not (isinstance(n.value, ast.Name) and n.value.id == "math" and n.attr in _SAFE_MATH):
                raise _NotPlannable(ast.unparse(n))
        if isinstance(n, ast.Call) and isinstance(n.func, (ast.Name, ast.Attribute)) is False:
            raise _NotPlannable("call of an expression")
        if isinstance(n, ast.BinOp) and isinstance(n.op, (ast.Pow, ast.LShift, ast.Mult)):
            # keep the host safe from `x ** 10 ** 9` or `[0] * 10 ** 12` in a test file
            for side in (n.left, n.right):
                if isinstance(side, ast.Constant) and isinstance(side.value, int) and abs(side.value) > 10 ** 6:
                    raise _NotPlannable("huge operand")


def _eval(node: ast.expr, env: dict):
    _safe(node, set(env))
    try:
        code = compile(ast.Expression(node), "<check>", "eval")
        return eval(code, {"__builtins__": {}, **_SAFE_FUNCS}, dict(env))  # noqa: S307
    except Exception as exc:
        raise _NotPlannable(repr(exc)) from None


def _target_of(func: ast.expr, aliases: dict) -> str | None:
    """``f`` / ``candidate`` (an alias of f) / ``Solution().f`` -> the target string, else None."""
    if isinstance(func, ast.Name) and func.id in aliases:
        return aliases[func.id]
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Call) and not func.value.args \
            and not func.value.keywords and isinstance(func.value.func, ast.Name) and func.value.func.id == "Solution":
        return f"Solution.{func.attr}"
    return None


def _alias_value(node: ast.expr) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    target = _target_of(node, {})
    return target


def plan_check(check: str, entry_point: str) -> CallCheck | None:
    """A :class:`CallCheck` for `check`, or None when it is not of that shape (see the module docstring).

    Args:
        check: One check, as made by :func:`split_checks`.
        entry_point: The function under test (``candidate`` and ``Solution().<name>`` are also recognised).
    """
    try:
        tree = parse(check)
    except (SyntaxError, ValueError, MemoryError, RecursionError):
        return None
    if not tree.body or not isinstance(tree.body[-1], ast.Assert):
        return None
    aliases = {entry_point: entry_point} if entry_point else {}
    env: dict = {}
    try:
        for stmt in tree.body[:-1]:
            if isinstance(stmt, ast.Import) and all(a.name == "math" and a.asname is None for a in stmt.names):
                env["math"] = math
            elif isinstance(stmt, (ast.Import, ast.ImportFrom)):
                continue  # binds nothing the assertion may use (only `math` is known here)
            elif isinstance(stmt, ast.Expr) and isinstance(stmt.value, (ast.Constant, ast.Name)):
                continue  # a docstring, or a bare `print`: no effect
            elif isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
                name, value = stmt.targets[0].id, stmt.value
                alias = _alias_value(value)
                if alias is not None and (alias in aliases or alias.startswith("Solution.")):
                    aliases[name] = aliases.get(alias, alias)
                else:
                    env[name] = _eval(value, env)
            else:
                return None
        test = tree.body[-1].test
        calls, targets, found = [], set(), []
        for node in ast.walk(test):
            if isinstance(node, ast.Call):
                target = _target_of(node.func, aliases)
                if target is not None:
                    found.append((node, target))
        if not found:
            return None
        call_nodes = {id(n) for n, _ in found}
        for node, target in found:
            for sub in ast.walk(node):
                if sub is not node and id(sub) in call_nodes:
                    return None  # a call nested in another's arguments
            args = []
            for a in node.args:
                if isinstance(a, ast.Starred):
                    args.extend(_eval(a.value, env))
                else:
                    args.append(_eval(a, env))
            kwargs = {}
            for k in node.keywords:
                if k.arg is None:
                    kwargs.update(_eval(k.value, env))
                else:
                    kwargs[k.arg] = _eval(k.value, env)
            call = [args, kwargs]
            if decode_value(encode_value(call)) != call:  # only plain data crosses into the child
                return None
            calls.append(encode_value(call))
            targets.add(target)
        if len(targets) != 1:
            return None

        # ast.walk is breadth-first; number the calls in the same order as `calls`
        order = {id(n): i for i, (n, _) in enumerate(found)}
        swapped = _renumber(test, order)
        assertion = ast.fix_missing_locations(ast.Expression(swapped))
        _safe(assertion, set(env) | {f"{_CALL_VAR}{i}" for i in range(len(found))})
    except (_NotPlannable, RecursionError, MemoryError):
        return None
    return CallCheck(targets.pop(), [decode_value(c) for c in calls], assertion, env, check)


def _renumber(test: ast.expr, order: dict) -> ast.expr:
    """A copy of `test` with each call in `order` replaced by the name of its result."""

    class Swap(ast.NodeTransformer):
        def visit_Call(self, node):
            if id(node) in order:
                return ast.copy_location(ast.Name(f"{_CALL_VAR}{order[id(node)]}", ast.Load()), node)
            return self.generic_visit(node)

    # deepcopy keeps no ids, so map by walking both trees in the same order
    clone = copy.deepcopy(test)
    pairs = {id(c): order[id(o)] for o, c in zip(ast.walk(test), ast.walk(clone)) if id(o) in order}
    order.clear()
    order.update(pairs)
    return Swap().visit(clone)


def assert_program(solution: str, check: str, nonce: str) -> str:
    """The in-process fallback: a program running `check` after `solution`, printing `nonce`
    only if the check ran to its end. Used only for checks :func:`plan_check` cannot split.

    The solution and the check are compiled separately (the nonce is not among the solution's
    constants) and run with ``__name__ != "__main__"``; the marker is written with a reference
    to ``os.write`` taken before the solution ran. A solution that digs the nonce out of this
    process, patches ``exec``, or returns objects with a lying ``__eq__`` can still pass such checks.
    """
    return (
        "import os as _lbt_os\n"
        "_lbt_write = _lbt_os.write\n"
        "_lbt_ns = {'__name__': '__solution__', '__builtins__': __builtins__}\n"
        f"exec(compile({solution!r}, 'solution.py', 'exec'), _lbt_ns)\n"
        f"exec(compile({check!r}, 'check.py', 'exec'), _lbt_ns)\n"
        f"_lbt_write(1, b'\\n' + {nonce.encode()!r} + b'\\n')\n"
    )
