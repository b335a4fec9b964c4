"""Code extraction, HumanEval/LeetCode loading and check splitting, and sandboxed code scoring."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from lbt_dspy.errors import LbtError
from lbt_dspy.sandbox import SandboxLimits
from lbt_dspy.scoring.base import exam_scorers
from lbt_dspy.data.checks import split_checks, visible_checks
from lbt_dspy.data.code import as_problem, load_humaneval, load_leetcode
from lbt_dspy.scoring.code import CodeScorer, extract_code, run_checks, solution_program


@pytest.fixture(scope="module")
def humaneval():
    return load_humaneval()


# ---------------------------------------------------------------------------------------------
# Extraction
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, expected", [
    # the last complete fenced block that defines a function, not the later usage example
    ("Plan.\n```python\ndef f(x):\n    return x + 1\n```\nUsage:\n```python\nprint(f(1))\n```",
     "def f(x):\n    return x + 1"),
    ("```py\ndef a():\n    pass\n```\nBetter:\n```python\ndef b():\n    return 2\n```", "def b():\n    return 2"),
    ("```\ndef bare_fence():\n    return 1\n```", "def bare_fence():\n    return 1"),
    ("```text\nsome output\n```\n```python3\ndef g():\n    return 3\n```", "def g():\n    return 3"),
    # fences indented inside a list item
    ("1. Code:\n    ```python\n    def h(x):\n        return x\n    ```\n", "def h(x):\n    return x"),
    # the seed's [[Final Code]] block wins over code in the rationale, with $...$ or a fence
    ("[[RATIONALE]]:\n```python\ndef draft():\n    pass\n```\n[[Final Code]]:\n$def f(x):\n    return x$\n",
     "def f(x):\n    return x"),
    ("[[Final Code]]:\n```python\ndef g(x):\n    return 2 * x\n```\n[[Question]]:\nnext one",
     "def g(x):\n    return 2 * x"),
    ("[[DEBUG Code]]:\ndef fixed():\n    return 0\n", "def fixed():\n    return 0"),
    # bare code, with prose before and after
    ("def h(x):\n    return x + 1", "def h(x):\n    return x + 1"),
    ("Sure! Here it is:\n\nimport math\ndef r(x):\n    return math.sqrt(x)\n\nThis uses sqrt.",
     "import math\ndef r(x):\n    return math.sqrt(x)"),
    # an unterminated final fence (the model ran out of tokens after the code)
    ("```python\ndef t(x):\n    return x\n", "def t(x):\n    return x"),
    ("no code here at all", ""),
    ("", ""),
])
def test_extract_code(text, expected):
    assert extract_code(text) == expected


def test_extract_class_solution():
    text = "```python\nclass Solution:\n    def stoneGame(self, piles):\n        return True\n```"
    assert extract_code(text).startswith("class Solution:")


# ---------------------------------------------------------------------------------------------
# Check splitting and HumanEval loading
# ---------------------------------------------------------------------------------------------
def test_split_checks_setup_loops_and_trivial_asserts():
    test = ("METADATA = {}\n\ndef check(candidate):\n    import math\n    assert candidate(1) == 2\n"
            "    xs = [1, 2]\n    for x in xs:\n        assert candidate(x) == x + 1\n    assert True, 'nothing'\n")
    checks = split_checks(test, "inc")
    assert checks == ["METADATA = {}\ncandidate = inc\nimport math\nassert candidate(1) == 2",
                      "METADATA = {}\ncandidate = inc\nimport math\nxs = [1, 2]\n"
                      "for x in xs:\n    assert candidate(x) == x + 1"]


def test_split_checks_flat_and_unsplittable():
    assert split_checks("assert Solution().f(1) == 1\nassert Solution().f(2) == 4\n") == [
        "assert Solution().f(1) == 1", "assert Solution().f(2) == 4"]
    # nothing to split: the whole test is one check (with the call HumanEval's harness makes)
    assert split_checks("def check(candidate):\n    candidate(1)\n", "f") == [
        "def check(candidate):\n    candidate(1)\n\ncheck(f)\n"]
    assert split_checks("this is not python(", "f") == ["this is not python(\n"]


def test_visible_checks_match_docstring_examples():
    checks = ["candidate = f\nassert candidate([1, 2]) == 3", "candidate = f\nassert candidate([5]) == 5",
              "candidate = f\nassert candidate(x=[0]) == 0"]
    prompt = 'def f(xs):\n    """Sum.\n    >>> f([5])\n    5\n    >>> f(x=[0])\n    0\n    """\n'
    assert visible_checks(checks, prompt, "f") == checks[1:]
    assert visible_checks(checks, 'def f(xs):\n    """No examples."""\n', "f") == checks[:2]


def test_load_humaneval(humaneval):
    assert len(humaneval) == 164
    for p in humaneval:
        assert p["visible"] and p["hidden"] and set(p["visible"]) <= set(p["hidden"])
        assert p["answer"].startswith(p["prompt"])
    by_id = {p["task_id"]: p for p in humaneval}
    assert len(by_id["HumanEval/0"]["hidden"]) == 7
    assert len(by_id["HumanEval/0"]["visible"]) == 2  # its docstring examples are not among the asserts
    assert len(by_id["HumanEval/32"]["hidden"]) == 1  # one loop over random polynomials
    assert "rng = random.Random(42)" in by_id["HumanEval/32"]["hidden"][0]
    assert all("assert True" not in c for p in humaneval for c in p["hidden"])
    # HumanEval/2's docstring example truncate_number(3.5) is one of its asserts
    assert by_id["HumanEval/2"]["visible"] == [c for c in by_id["HumanEval/2"]["hidden"] if "candidate(3.5)" in c]


# ---------------------------------------------------------------------------------------------
# Scoring HumanEval
# ---------------------------------------------------------------------------------------------
def _s_scores(answers, problems, scorer):
    # one check at a time per problem, problems in parallel: keeps both cores busy
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(pool.map(scorer.s_score, answers, problems))


def test_all_canonical_solutions_pass_their_hidden_checks(humaneval):
    scorer = CodeScorer(mode="hidden", max_workers=1)
    scores = _s_scores([p["answer"] for p in humaneval], humaneval, scorer)
    failed = [p["task_id"] for p, s in zip(humaneval, scores) if s != 1.0]
    assert failed == []
    # visible checks are hidden checks too: the V-scores come from the cache
    assert all(scorer.v_score(p["answer"], p) == 1.0 for p in humaneval)


def _broken_none(p):
    return p["answer"] + f"\n\ndef {p['entry_point']}(*args, **kwargs):\n    return None\n"


def _broken_off_by_one(p):
    # every result nudged: ints off by one, strings/lists one element longer, bools flipped
    return p["answer"] + f"""

_lbt_reference = {p['entry_point']}
def {p['entry_point']}(*args, **kwargs):
    r = _lbt_reference(*args, **kwargs)
    if isinstance(r, bool):
        return not r
    if isinstance(r, (int, float)):
        return r + 1
    if isinstance(r, str):
        return r + "x"
    if isinstance(r, (list, tuple)):
        return type(r)(list(r) + [0])
    return 0 if r is None else None
"""


@pytest.mark.parametrize("breaker", [_broken_none, _broken_off_by_one])
def test_broken_solutions_fail(humaneval, breaker):
    subset = humaneval[::4]  # 41 problems, deterministic
    scorer = CodeScorer(mode="hidden", max_workers=1)
    answers = [breaker(p) for p in subset]
    scores = _s_scores(answers, subset, scorer)
    assert all(s < 1.0 for s in scores), [p["task_id"] for p, s in zip(subset, scores) if s >= 1.0]
    v = [scorer.v_score(a, p) for a, p in zip(answers, subset)]
    if breaker is _broken_off_by_one:
        assert sum(v) == 0
    else:  # HumanEval/12's docstring example expects None for an empty list
        assert sum(v) <= 1
    assert sum(scores) / len(scores) < 0.2


def test_completion_style_answer(humaneval):
    p = humaneval[0]
    completion = p["answer"][len(p["prompt"]):]  # HumanEval's canonical_solution: only the body
    assert "def " not in completion.split("\n", 1)[0]
    assert run_checks(completion, p, "visible") == [True, True]


def test_demo_code_under_main_guard_does_not_run():
    problem = as_problem("assert double(2) == 4\n")
    answer = "def double(x):\n    return 2 * x\n\nif __name__ == '__main__':\n    print(double(int(input())))\n"
    assert CodeScorer().score(answer, problem) == 1.0


def test_score_modes_and_raw_rows(humaneval):
    problem = {"task_id": "t", "prompt": "", "entry_point": "sq",
               "visible": ["assert sq(2) == 4"],
               "hidden": ["assert sq(2) == 4", "assert sq(3) == 9", "assert sq(0) == 0"]}
    half_right = "def sq(x):\n    return 4 if x == 2 else 0\n"
    assert CodeScorer().score(half_right, problem) == 1.0  # V-score: all visible pass
    assert CodeScorer(mode="hidden").score(half_right, problem) == pytest.approx(2 / 3)
    assert CodeScorer().score("def sq(x):\n    return x\n", problem) == 0.0
    assert CodeScorer().score("this is not code", problem) == 0.0
    assert CodeScorer().score("", problem) == 0.0
    # a raw HumanEval row works as a reference too
    raw = {"task_id": "HumanEval/0", "prompt": humaneval[0]["prompt"], "entry_point": "has_close_elements",
           "canonical_solution": humaneval[0]["answer"][len(humaneval[0]["prompt"]):],
           "test": "def check(candidate):\n    assert candidate([1.0, 1.05], 0.1) == True\n"}
    assert CodeScorer().score(humaneval[0]["answer"], raw) == 1.0


def test_registry_builds_code_scorer():
    cfg = {"mode": "hidden", "limits": {"cpu_seconds": 2, "wall_seconds": 4}}
    scorer = exam_scorers.build({"exam_scorer_type": "code", "exam_scorer_cfg": cfg})
    assert isinstance(scorer, CodeScorer) and scorer.mode == "hidden"
    assert scorer.limits == SandboxLimits(cpu_seconds=2, wall_seconds=4)
    with pytest.raises(LbtError):
        CodeScorer(mode="secret")
    with pytest.raises(LbtError):
        CodeScorer(limits={"cpu_secs": 1})


def test_equivalent_ignores_formatting_comments_and_docstrings():
    scorer = CodeScorer()
    a = "def f(x):\n    '''Add one.'''\n    return x+1  # inc\n"
    b = "def f( x ):\n\n    return (x + 1)\n"
    assert scorer.equivalent(a, b)
    assert not scorer.equivalent(a, "def f(x):\n    return x + 2\n")


# ---------------------------------------------------------------------------------------------
# LeetCode format (the seed's dataset.jsonl)
# ---------------------------------------------------------------------------------------------
def test_load_leetcode(tmp_path):
    rows = [
        {"task_id": "stone-game",
         "question": ('Write a python code \n"""class Solution():\n    def stoneGame(self, piles: List[int]) -> bool'
                      '"""\n to solve ...'),
         "answer": "class Solution:\n    def stoneGame(self, piles: List[int]) -> bool:\n        return True\n",
         "test": "assert Solution().stoneGame([5,3,4,5]) == True\nassert Solution().stoneGame([3,7,2,3]) == True",
         "signature": "class Solution():\n    def stoneGame(self, piles: List[int]) -> bool",
         "docstring": "Alice and Bob play ...", "tags": "Array, Math, Dynamic Programming, Game Theory"},
        {"task_id": "climb", "question": "...", "answer": "",
         "test": "assert Solution().climbStairs(2) == 2\nassert Solution().climbStairs(3) == 3",
         "hidden_test": "assert Solution().climbStairs(5) == 8\nassert Solution().climbStairs(1) == 1",
         "signature": "class Solution():\n    def climbStairs(self, n: int) -> int", "docstring": "",
         "tags": "Dynamic Programming"},
    ]
    path = tmp_path / "dataset.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    stone, climb = load_leetcode(path)
    assert stone["entry_point"] == "stoneGame" and stone["prompt"] == ""
    assert stone["visible"] == stone["hidden"] == ["assert Solution().stoneGame([5,3,4,5]) == True",
                                                  "assert Solution().stoneGame([3,7,2,3]) == True"]
    assert stone["tags"].endswith("Game Theory")
    assert CodeScorer().score(stone["answer"], stone) == 1.0  # `List` comes from the header
    assert len(climb["visible"]) == 2 and len(climb["hidden"]) == 2 and climb["visible"] != climb["hidden"]
    fib = ("class Solution:\n    def climbStairs(self, n):\n        a, b = 1, 1\n"
           "        for _ in range(n):\n            a, b = b, a + b\n        return a\n")
    assert CodeScorer(mode="hidden").score(fib, climb) == 1.0
    assert CodeScorer(mode="hidden").score(fib.replace("return a", "return a if n < 5 else 0"), climb) == 0.5
    with pytest.raises(LbtError):
        bad = tmp_path / "bad.jsonl"
        bad.write_text('{"task_id": "x"}\n')
        load_leetcode(bad)


def test_solution_program_prepends_header_and_prompt(humaneval):
    p = humaneval[0]
    prog = solution_program("def has_close_elements(numbers, threshold):\n    return False\n", p)
    assert prog.startswith("from typing import *") and p["prompt"] in prog


def test_no_import_cycle_between_data_scoring_and_sandbox():
    # data -> (nothing of scoring); scoring -> data, sandbox; sandbox -> neither. Static imports only,
    # package __init__ edges included, so a lazy import cannot hide a cycle.
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "lbt_dspy"
    graph = {}
    for pkg in ("data", "scoring", "sandbox"):
        for f in (root / pkg).glob("*.py"):
            mod = f"lbt_dspy.{pkg}" + ("" if f.stem == "__init__" else f".{f.stem}")
            base = mod.split(".") if f.stem == "__init__" else mod.split(".")[:-1]
            deps = set()
            for n in ast.walk(ast.parse(f.read_text())):
                if isinstance(n, ast.ImportFrom):
                    target = ".".join(base[:len(base) - n.level + 1] + ([n.module] if n.module else [])) \
                        if n.level else (n.module or "")
                    deps.add(target)
                    deps.update(f"{target}.{a.name}" for a in n.names)
                elif isinstance(n, ast.Import):
                    deps.update(a.name for a in n.names)
            graph[mod] = deps
    edges = {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}
    for m in list(edges):  # importing a.b.c runs a.b's __init__ first
        for d in list(edges[m]):
            parent = d.rsplit(".", 1)[0]
            if parent in graph and parent != m and not m.startswith(parent + "."):
                edges[m].add(parent)
    assert not any(d.startswith("lbt_dspy.scoring") for m in edges if m.startswith("lbt_dspy.data") for d in edges[m])
    assert not any(d.startswith(("lbt_dspy.scoring", "lbt_dspy.data")) for m in edges
                   if m.startswith("lbt_dspy.sandbox") for d in edges[m])
    # and no cycle between the three packages (a package's modules taken together)
    pkg = {m: m.split(".")[1] for m in edges}
    between = {p: {pkg[d] for m in edges if pkg[m] == p for d in edges[m] if pkg[d] != p} for p in set(pkg.values())}
    assert between == {"data": set(), "sandbox": set(), "scoring": {"data", "sandbox"}}
