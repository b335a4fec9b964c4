"""The seed's meta-info exam makers, with the seed's semantics: ``math_metainfo``, ``code_metainfo``,
``code_fixed_exam``.

Exam problems are bank rows whose metadata matches the teaching item's: the same subject and a
permitted level (math), the teaching item's tag among the row's tags (code; the teaching problem itself
is kept when it is in the bank, as in the seed). `num_exam_questions` is shared among the teaching
items (`allocate`); the first matches are taken, or a sample when `random` is set. Fewer matches than
asked give a warning and a shorter exam, as in the seed. lbt's `random` is seeded per teaching item
(the seed's was not), so a resumed run sees the same exam.
"""

from __future__ import annotations

import logging
import random as _random

from ..errors import LbtError
from .makers import ExamMaker, allocate, exam_makers

log = logging.getLogger(__name__)


def _level(value):
    """A MATH level as an int: ``3`` or ``"Level 3"``; None if unreadable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    text = str(value or "").strip().lower().removeprefix("level").strip()
    return int(text) if text.isdigit() else None


class _MetaInfoMaker(ExamMaker):
    name = ""

    def __init__(self, exam_bank_dataset, selected_indexes=None, same_subject: bool = True,
                 level_controls: list | tuple = ("=",), num_exam_questions: int = 16, random: bool = False,
                 seed: int = 0):
        super().__init__(exam_bank_dataset, selected_indexes)
        if not isinstance(num_exam_questions, int) or isinstance(num_exam_questions, bool) or num_exam_questions < 1:
            raise LbtError(f"exam_maker_cfg.num_exam_questions: expected an integer >= 1, got {num_exam_questions!r}")
        self.same_subject = bool(same_subject)
        self.level_controls = list(level_controls or [])
        self.num_exam_questions = num_exam_questions
        self.random = bool(random)
        self.seed = seed

    def matches(self, item: dict) -> list[dict] | None:
        """Bank rows that fit `item` (None: the item lacks the metadata; the seed skips it with a warning)."""
        raise NotImplementedError

    def make_exam_questions(self, teaching_items):
        self._need_items(teaching_items, self.name)
        exam = []
        for item, num in zip(teaching_items, allocate(len(teaching_items), self.num_exam_questions)):
            if num == 0:
                continue
            pool = self.matches(item)
            if pool is None:
                continue
            if len(pool) > num:
                if self.random:
                    rng = _random.Random(f"{self.seed}:{item.get('unique_id') or item.get('task_id') or item.get('question')}")
                    picked = sorted(rng.sample(range(len(pool)), num))
                    pool = [pool[i] for i in picked]
                else:
                    pool = pool[:num]
            elif len(pool) < num:
                log.warning("exam_maker_type %s: %d exam problem(s) match %r, fewer than the %d asked",
                            self.name, len(pool), item.get("unique_id") or item.get("task_id"), num)
            exam.extend(pool)
        return exam


@exam_makers.register("math_metainfo")
class MathMetaInfoExamMaker(_MetaInfoMaker):
    """MATH problems with the teaching problem's subject and a permitted level (the seed's ``math_metainfo``).

    Args:
        exam_bank_dataset: Rows with ``subject`` and ``level`` (an int or "Level N").
        selected_indexes: Only these bank rows are used.
        same_subject: Keep rows whose ``subject`` equals the teaching item's.
        level_controls: Permitted levels: an int (that level), ``"="`` (the teaching item's), ``">"``
            (harder ones, up to 5), ``"<"`` (easier ones). The seed's ``"<"`` matched nothing (a typo made it a
            second ``">"`` branch); here it means easier levels.
        num_exam_questions: Exam problems in all, shared among the teaching items.
        random: Sample the matches (seeded) instead of taking the first ones.
        seed: Seed for `random`.

    Example:
        >>> bank = [{"question": f"q{i}", "answer": "1", "subject": "Algebra", "level": 1 + i % 2} for i in range(4)]
        >>> [q["question"] for q in MathMetaInfoExamMaker(bank, num_exam_questions=2).make_exam_questions(
        ...     [{"question": "t", "subject": "Algebra", "level": 2}])]
        ['q1', 'q3']
    """

    name = "math_metainfo"

    def __init__(self, exam_bank_dataset, selected_indexes=None, same_subject: bool = True,
                 level_controls: list | tuple = ("=",), num_exam_questions: int = 16, random: bool = False,
                 seed: int = 0):
        super().__init__(exam_bank_dataset, selected_indexes, same_subject, level_controls, num_exam_questions,
                         random, seed)
        for control in self.level_controls:
            if _level(control) is None and control not in ("=", ">", "<"):
                raise LbtError(f"exam_maker_cfg.level_controls: {control!r} is not a level, '=', '>' or '<'")
        for key, needed in (("level", bool(self.level_controls)), ("subject", self.same_subject)):
            if needed and any(key not in r for r in self.exam_bank):
                raise LbtError(f"exam_maker_type math_metainfo: exam bank rows need a {key!r} field")

    def permitted_levels(self, level) -> set[int]:
        out = set()
        for control in self.level_controls:
            if _level(control) is not None:
                out.add(_level(control))
                continue
            if level is None:
                log.warning("math_metainfo: the teaching item has no level; level control %r skipped", control)
            elif control == "=":
                out.add(level)
            elif control == ">":
                out.update(range(level + 1, 6))
            else:
                out.update(range(1, level))
        return out

    def matches(self, item):
        pool = self.exam_bank
        if self.same_subject:
            if "subject" not in item:
                log.warning("math_metainfo: a teaching item has no subject; it brings no exam problems (as in the seed)")
                return None
            pool = [r for r in pool if r.get("subject") == item["subject"]]
        if self.level_controls:
            levels = self.permitted_levels(_level(item.get("level")))
            pool = [r for r in pool if _level(r.get("level")) in levels]
        return pool


@exam_makers.register("code_metainfo")
class CodeMetaInfoExamMaker(_MetaInfoMaker):
    """Code problems sharing the teaching problem's tag (the seed's ``code_metainfo``): a row matches
    when the teaching item's ``tags`` string occurs in the row's ``tags``. The teaching problem itself
    matches too (the seed's code scripts drop it afterwards by ``task_id``).

    Args:
        exam_bank_dataset: Rows with ``tags``.
        selected_indexes: Only these bank rows are used.
        same_subject: Filter by tag (the seed's name for it).
        level_controls: Accepted as in the seed, where it has no effect for code (a warning says so).
        num_exam_questions: Exam problems in all (the seed's configs ask 300: every match).
        random: Sample the matches (seeded) instead of taking the first ones.
        seed: Seed for `random`.

    Example:
        >>> bank = [{"task_id": "a", "question": "qa", "tags": "Binary Search, Array"},
        ...         {"task_id": "b", "question": "qb", "tags": "Dynamic Programming"}]
        >>> [q["task_id"] for q in CodeMetaInfoExamMaker(bank).make_exam_questions([{"tags": "Binary Search"}])]
        ['a']
    """

    name = "code_metainfo"

    def __init__(self, exam_bank_dataset, selected_indexes=None, same_subject: bool = True,
                 level_controls: list | tuple = ("=",), num_exam_questions: int = 16, random: bool = False,
                 seed: int = 0):
        super().__init__(exam_bank_dataset, selected_indexes, same_subject, level_controls, num_exam_questions,
                         random, seed)
        if list(level_controls or []) != ["="]:
            log.warning("exam_maker_cfg.level_controls: no effect for code_metainfo (code problems have no levels)")
        if self.same_subject and any("tags" not in r for r in self.exam_bank):
            raise LbtError("exam_maker_type code_metainfo: exam bank rows need a 'tags' field")

    def matches(self, item):
        if not self.same_subject:
            return list(self.exam_bank)
        if "tags" not in item:
            log.warning("code_metainfo: a teaching item has no tags; it brings no exam problems (as in the seed)")
            return None
        tag = item["tags"]
        return [r for r in self.exam_bank if _tag_in(tag, r.get("tags"))]


def _tag_in(tag, tags) -> bool:
    if isinstance(tags, (list, tuple)):
        return tag in tags
    return str(tag) in str(tags or "")


@exam_makers.register("code_fixed_exam")
class CodeFixedExamMaker(ExamMaker):
    """The teaching problem itself as the exam (the seed's ``code_fixed_exam``): the bank row whose
    ``task_id`` is the first teaching item's.

    Args:
        exam_bank_dataset: Rows with ``task_id``.
        selected_indexes: Only these bank rows are used.
        same_subject, level_controls, num_exam_questions, random: Accepted as in the seed, where they have no effect.

    Example:
        >>> bank = [{"task_id": "a", "question": "qa"}, {"task_id": "b", "question": "qb"}]
        >>> CodeFixedExamMaker(bank).make_exam_questions([{"task_id": "b"}])
        [{'task_id': 'b', 'question': 'qb'}]
    """

    def __init__(self, exam_bank_dataset, selected_indexes=None, same_subject: bool = True,
                 level_controls: list | tuple = ("=",), num_exam_questions: int = 16, random: bool = False):
        super().__init__(exam_bank_dataset, selected_indexes)
        if any("task_id" not in r for r in self.exam_bank):
            raise LbtError("exam_maker_type code_fixed_exam: exam bank rows need a 'task_id' field")

    def make_exam_questions(self, teaching_items):
        self._need_items(teaching_items, "code_fixed_exam")
        task_id = teaching_items[0].get("task_id")
        for row in self.exam_bank:
            if row["task_id"] == task_id:
                return [row]
        raise LbtError(f"exam_maker_type code_fixed_exam: no exam bank row has the teaching item's task_id {task_id!r}")
