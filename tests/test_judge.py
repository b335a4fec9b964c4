"""The code judge: checks split into calls (run in the sandbox) and assertions (evaluated by the host).

Forged passes: a wrong solution plus a trick that would make an in-process harness report success.
Every one must score 0 (each also defines a wrong `add`, so only the trick could make it pass).
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lbt_dspy.data.code import load_humaneval
from lbt_dspy.sandbox import CallFailed, SandboxLimits, run_python
from lbt_dspy.sandbox.bootstrap import decode_value, encode_value
from lbt_dspy.scoring.code import CodeScorer, run_checks
from lbt_dspy.scoring.judge import plan_check

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=5, memory_mb=256, max_processes=1)
ADD = {"task_id": "toy/add", "prompt": "", "entry_point": "add",
       "visible": ["assert add(1, 2) == 3"],
       "hidden": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15",
                  "assert abs(add(0.5, 0.25) - 0.75) < 1e-9", "assert add(2, 2) is not None and add(2, 2) == 4"]}
WRONG = "\ndef add(a, b):\n    return 42\n"
SCORER = CodeScorer(mode="hidden", limits=FAST)

FORGERIES = {
    "patched exec": "import builtins\nbuiltins.exec = lambda *a, **k: None\n",
    "patched compile": "import builtins\n_c = builtins.compile\nbuiltins.compile = lambda s, f, m, *a, **k: _c('pass', f, m)\n",
    "patched isinstance": "import builtins\nbuiltins.isinstance = lambda *a: True\n",
    "lying __eq__": "class Y:\n    __eq__ = lambda s, o: True\n    __ne__ = lambda s, o: False\n    __lt__ = __eq__\n"
                    "    __sub__ = lambda s, o: 0\n    __bool__ = lambda s: True\n"
                    "add = lambda a, b: Y()\n",
    "int subclass lying __eq__": "class I(int):\n    __eq__ = lambda s, o: True\n    __sub__ = lambda s, o: 0\n"
                                 "    __hash__ = int.__hash__\nadd = lambda a, b: I(42)\n",
    "fake __class__": "class Z:\n    __class__ = property(lambda s: int)\n    __eq__ = lambda s, o: True\n"
                      "add = lambda a, b: Z()\n",
    "str subclass": "class S(str):\n    __eq__ = lambda s, o: True\nadd = lambda a, b: S('x')\n",
    "print a marker": "print('PASSED')\nprint('\\n' + '0' * 32 + '\\n')\nimport sys\nsys.stdout.flush()\n",
    "exit 0 early": "import os\nos._exit(0)\n",
    "SystemExit in the call": "def add(a, b):\n    raise SystemExit(0)\n",
    "atexit exit 0": "import atexit, os\natexit.register(lambda: os._exit(0))\n",
    "read the checks from memory": (
        "import gc, re\nfound = [o for o in gc.get_objects() if isinstance(o, str) and 'assert' in o]\n"
        "nonces = set(re.findall(r'[0-9a-f]{32}', ' '.join(found) + open('/proc/self/cmdline').read()))\n"
        "print('\\n'.join('\\n' + n + '\\n' for n in nonces))\n"),
    "read the expected values from disk": (
        "import os\nfor root in ('/work', '/tmp', '/root', '/proc/1/root/work', '/proc/1/environ'):\n"
        "    try:\n        print(os.listdir(root) if os.path.isdir(root) else open(root).read())\n"
        "    except OSError:\n        pass\n"),
    "fake results on every fd": (
        "import os\nfor fd in range(3, 64):\n    try:\n        os.write(fd, b'{\"ok\": 42}\\n' * 2)\n"
        "    except OSError:\n        pass\nos._exit(0)\n"),
    "monkeypatch the harness": (
        "import __main__, json, os\n__main__.decode_value = lambda v: [[1, 2], {}]\n"
        "__main__.encode_value = lambda v, depth=0: 3\njson.dumps = lambda o: '{\"ok\": 3}'\n"
        "os.write = lambda fd, data: len(data)\n"),
    "harness frames from the call": (
        "import sys, os\ndef add(a, b):\n    f = sys._getframe(1)\n"
        "    f.f_globals['encode_value'] = lambda v, depth=0: {'list': []}\n"
        "    w, fd = f.f_locals.get('write'), f.f_locals.get('results_fd')\n"
        "    if w and fd is not None:\n        w(fd, b'{\"ok\": 42}\\n' * 5)\n"
        "    os._exit(0)\n"),
    "a generator": "def add(a, b):\n    yield a + b\n",
    "recursive list": "def add(a, b):\n    x = []\n    x.append(x)\n    return x\n",
}


@pytest.mark.parametrize("name", sorted(FORGERIES))
def test_forged_pass_is_rejected(name):
    trick = FORGERIES[name]
    solution = trick if "def add" in trick or "add = " in trick else trick + WRONG
    assert SCORER.score(solution, ADD) == 0.0, name


def test_correct_answer_with_odd_but_plain_types_still_passes():
    # dict/tuple/int subclasses are read as their plain values: Counter, namedtuple, IntEnum, bool
    problem = {"entry_point": "f", "prompt": "",
               "hidden": ["assert f('aab') == {'a': 2, 'b': 1}", "assert f(3) == (3, 4)", "assert f(1) == 1",
                          "assert f(0) == False"]}
    solution = textwrap.dedent("""
        import collections, enum
        P = collections.namedtuple("P", "x y")
        class One(enum.IntEnum):
            ONE = 1
        def f(x):
            if isinstance(x, str):
                return collections.Counter(x)
            if x == 3:
                return P(3, 4)
            return One.ONE if x == 1 else False
    """)
    assert CodeScorer(mode="hidden", limits=FAST).score(solution, problem) == 1.0


def test_right_answers_pass_and_prints_do_not_matter():
    right = "print('noise')\ndef add(a, b):\n    print('more noise', a, b)\n    return a + b\n"
    assert SCORER.score(right, ADD) == 1.0
    half = "def add(a, b):\n    return a + b if a > 0 else 99\n"
    assert SCORER.score(half, ADD) == pytest.approx(4 / 5)


def test_calls_mode_returns_plain_values_and_failures():
    r = run_python("def f(x):\n    if x == 0:\n        raise ValueError\n    return {x: [x, (x,)]}\n", FAST,
                   calls=("f", [[[1], {}], [[0], {}]]))
    assert r.passed and r.values[0] == {1: [1, (1,)]} and isinstance(r.values[1], CallFailed)
    r = run_python("class Solution:\n    def g(self, s):\n        return s[::-1]\n", FAST,
                   calls=("Solution.g", [[["abc"], {}]]))
    assert r.values == ["cba"]
    # a solution that dies before the harness ran gives no values at all
    assert run_python("import os\nos._exit(0)\n", FAST, calls=("f", [[[1], {}]])).values is None


@pytest.mark.parametrize("value", [None, True, 0, -(10 ** 40), 2.5, float("inf"), -0.0, 1 + 2j, "é\udcff", b"\x00",
                                   bytearray(b"ab"), [1, [2]], (1, (2,)), {"a": (1,)}, {1, 2}, frozenset({3}), ()])
def test_wire_codec_round_trip(value):
    back = decode_value(encode_value(value))
    assert back == value and type(back) is type(value)


def test_wire_codec_reads_subclasses_through_their_base():
    class Liar(list):
        def __eq__(self, other):
            return True

        def __iter__(self):
            return iter([99])

    assert decode_value(encode_value(Liar([1, 2]))) == [1, 2]
    assert isinstance(decode_value(encode_value(object())), CallFailed)
    assert isinstance(decode_value(encode_value(iter([1]))), CallFailed)


def test_plan_check_shapes():
    assert plan_check("candidate = f\nassert candidate([1, 2]) == [2, 1]", "f").calls == [[[[1, 2]], {}]]
    tol = plan_check("import math\ncandidate = f\nassert math.isclose(candidate(2.0), 1.41, rel_tol=0.01)", "f")
    assert tol.passed([1.414]) and not tol.passed([1.5]) and not tol.passed([CallFailed("x")])
    setup = plan_check("lst = [i for i in range(5)]\nexpected = sum(lst)\nassert f(lst) == expected", "f")
    assert setup.calls == [[[[0, 1, 2, 3, 4]], {}]] and setup.passed([10])
    # a call that raised fails the check, even where the assertion alone would hold
    assert not plan_check("assert f(1) != 5", "f").passed([CallFailed("raised ValueError")])
    assert not plan_check("assert f(1) or f(2)", "f").passed([True, CallFailed("raised ValueError")])
    two = plan_check("assert f(1) + f(2) == 3", "f")
    assert two.passed([1, 2]) and not two.passed([1, 1])
    assert plan_check("assert Solution().g('ab') == 'ba'", "g").target == "Solution.g"
    # not of that shape: loops, helper calls, names the host does not know, attribute access
    for check in ("for x in range(3):\n    assert f(x) == x", "assert f(helper(1)) == 2", "assert f(y) == 1",
                  "assert f(1).real == 1", "assert f(1) == (1).__class__", "assert f(f(1)) == 1",
                  "assert g(1) == 1", "def h():\n    pass\nassert f(1) == h()"):
        assert plan_check(check, "f") is None, check


def test_humaneval_checks_judged_outside_the_solution():
    # All but the loops over random or computed inputs become calls; those are counted here and
    # named in docs/sandbox.md.
    problems = load_humaneval()
    total = sum(len(p["hidden"]) for p in problems)
    in_process = sorted({p["task_id"] for p in problems for c in p["hidden"] if plan_check(c, p["entry_point"]) is None})
    n_in_process = sum(plan_check(c, p["entry_point"]) is None for p in problems for c in p["hidden"])
    assert (total, n_in_process) == (1133, 5)
    assert in_process == ["HumanEval/32", "HumanEval/38", "HumanEval/44", "HumanEval/50", "HumanEval/53"]


def test_in_process_fallback_still_runs_and_is_forgeable():
    # The 5 loop checks run in-process: right answers pass, wrong ones fail...
    loop = {"entry_point": "f", "prompt": "", "hidden": ["for x in range(3):\n    assert f(x) == x * 2"]}
    assert run_checks("def f(x):\n    return 2 * x", loop) == [True]
    assert run_checks("def f(x):\n    return x", loop) == [False]
    # ...but a lying __eq__ fools them (documented in docs/sandbox.md); the call judge is not fooled.
    liar = "class Y:\n    __eq__ = lambda s, o: True\ndef f(x):\n    return Y()\n"
    assert run_checks(liar, loop) == [True]
    assert run_checks(liar, {"entry_point": "f", "prompt": "", "hidden": ["assert f(1) == 2"]}) == [False]


def test_bootstrap_is_a_linted_stdlib_only_module():
    root = Path(__file__).resolve().parents[1]
    boot = root / "lbt_dspy" / "sandbox" / "bootstrap.py"
    import ast

    imported = {a.name.split(".")[0] for n in ast.walk(ast.parse(boot.read_text()))
                if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(ast.parse(boot.read_text()))
                 if isinstance(n, ast.ImportFrom) and n.module and n.level == 0}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)
    pyflakes = pytest.importorskip("pyflakes")
    assert pyflakes
    out = subprocess.run([sys.executable, "-m", "pyflakes", str(root / "lbt_dspy" / "sandbox"),
                          str(root / "lbt_dspy" / "scoring" / "judge.py"), str(root / "lbt_dspy" / "data" / "checks.py")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_counter_answers_for_histogram_style_problems():
    # HumanEval/111 (histogram): a Counter-returning answer is right, as it would be in-process
    p = {x["task_id"]: x for x in load_humaneval()}["HumanEval/111"]
    answer = ("import collections\ndef histogram(test):\n    c = collections.Counter(test.split())\n"
              "    if not c:\n        return {}\n    m = max(c.values())\n"
              "    return collections.Counter({k: v for k, v in c.items() if v == m})\n")
    assert CodeScorer(mode="hidden", limits=FAST).score(answer, p) == 1.0
