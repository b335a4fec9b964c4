"""Exam makers (`exam_maker_type` / `exam_maker_cfg`): the exam problems for given teaching items.

Every exam problem is a dict with at least ``question`` and ``answer`` (the reference); the exam bank
is a list of such dicts. Makers are deterministic, so a resumed run sees the same exams.
"""

from __future__ import annotations

import ast
import random as _random

from ..errors import LbtError
from ..registry import Registry

exam_makers = Registry("exam_maker")


def parse_selected_indexes(value, bank_size: int) -> list[int] | None:
    """The seed's `selected_indexes`: None (all rows), a list of row indexes, or a string such as
    ``"range(0, 20)"`` or ``"[0, 3, 5]"`` (the seed ``eval``-ed it; lbt reads only these two forms).

    Example:
        >>> parse_selected_indexes("range(1, 4)", 10)
        [1, 2, 3]
    """
    if value is None:
        return None
    where = "exam_maker_cfg.selected_indexes"
    if isinstance(value, str):
        text = value.strip()
        try:
            node = ast.parse(text, mode="eval").body
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "range" \
                    and not node.keywords and 1 <= len(node.args) <= 3:
                value = list(range(*[ast.literal_eval(a) for a in node.args]))
            else:
                value = ast.literal_eval(node)
        except (SyntaxError, ValueError, TypeError):
            raise LbtError(f"{where}: {value!r} is neither 'range(a, b)' nor a list of indexes") from None
    if isinstance(value, range):
        value = list(value)
    if not isinstance(value, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool) for i in value):
        raise LbtError(f"{where}: expected a list of row indexes or 'range(a, b)', got {value!r:.80}")
    bad = [i for i in value if not 0 <= i < bank_size]
    if bad:
        raise LbtError(f"{where}: {bad[0]} is out of range (bank has {bank_size} rows)")
    return list(value)


def allocate(num_items: int, total: int) -> list[int]:
    """How many of `total` exam problems each of `num_items` teaching items brings (the seed's rule):
    equal shares, the first item taking the remainder; with more items than problems, one each for the first.

    Example:
        >>> allocate(2, 5), allocate(3, 2)
        ([3, 2], [1, 1, 0])
    """
    if num_items > total:
        return [1] * total + [0] * (num_items - total)
    other = total // num_items
    return [total - other * (num_items - 1)] + [other] * (num_items - 1)


class ExamMaker:
    """Interface: ``make_exam_questions(teaching_items) -> list[dict]`` over an exam bank.

    Args:
        exam_bank_dataset: The exam bank (a list of dict rows).
        selected_indexes: Only these bank rows are used (as in the seed: a list, or ``"range(a, b)"``).
    """

    def __init__(self, exam_bank_dataset: list[dict], selected_indexes=None):
        self.exam_bank = list(exam_bank_dataset)
        picked = parse_selected_indexes(selected_indexes, len(self.exam_bank))
        if picked is not None:
            self.exam_bank = [self.exam_bank[i] for i in picked]

    def make_exam_questions(self, teaching_items: list[dict]) -> list[dict]:
        raise NotImplementedError

    def _need_items(self, teaching_items, name: str) -> None:
        if not teaching_items:
            raise LbtError(f"exam_maker_type {name}: the exam is made from teaching items and this plan has none "
                           "(teaching_plans 'no demo' needs exam_maker_type fixed)")


@exam_makers.register("fixed")
class FixedExamMaker(ExamMaker):
    """The whole bank (or the rows at `selected_indexes`), whatever is taught.

    Args:
        exam_bank_dataset: The exam bank.
        selected_indexes: Rows to use; all when None.

    Example:
        >>> FixedExamMaker([{"question": "1+1?", "answer": "2"}]).make_exam_questions([])
        [{'question': '1+1?', 'answer': '2'}]
    """

    def __init__(self, exam_bank_dataset: list[dict], selected_indexes: list[int] | str | None = None):
        super().__init__(exam_bank_dataset, selected_indexes)

    def make_exam_questions(self, teaching_items):
        return list(self.exam_bank)


@exam_makers.register("func")
class FunctionalExamMaker(ExamMaker):
    """The paper's M1 exam: the functional variants of each teaching problem (same ``unique_id``),
    the list repeated `num_repetitions` times (``[v1, v2, v3, v1, v2, v3, ...]``).

    Args:
        exam_bank_dataset: Rows with ``unique_id``.
        num_exam_questions: Variants per teaching problem (the bank must hold at least this many).
        num_repetitions: How often each variant is asked.
        selected_indexes: Only these bank rows are used.

    Example:
        >>> bank = [{"unique_id": "a", "question": f"v{i}", "answer": "1"} for i in range(3)]
        >>> [q["question"] for q in FunctionalExamMaker(bank, 2, 2).make_exam_questions([{"unique_id": "a"}])]
        ['v0', 'v1', 'v0', 'v1']
    """

    required_fields = ("unique_id",)

    def __init__(self, exam_bank_dataset: list[dict], num_exam_questions: int = 3, num_repetitions: int = 3,
                 selected_indexes: list[int] | str | None = None):
        super().__init__(exam_bank_dataset, selected_indexes)
        if num_exam_questions < 1 or num_repetitions < 1:
            raise LbtError("exam_maker_cfg: num_exam_questions and num_repetitions must be >= 1")
        self.num_exam_questions = num_exam_questions
        self.num_repetitions = num_repetitions
        self._by_id: dict[str, list[dict]] = {}
        for row in self.exam_bank:
            if "unique_id" not in row:
                raise LbtError("exam_maker_type func: exam bank rows need a unique_id")
            self._by_id.setdefault(row["unique_id"], []).append(row)

    def make_exam_questions(self, teaching_items):
        self._need_items(teaching_items, "func")  # the seed asserts here; an empty exam would score nothing
        exam = []
        for item in teaching_items:
            variants = self._by_id.get(item.get("unique_id"), [])
            if len(variants) < self.num_exam_questions:
                raise LbtError(f"exam_maker_cfg.num_exam_questions: {self.num_exam_questions} asked but teaching item "
                               f"{item.get('unique_id')!r} has {len(variants)} variants in the exam bank")
            exam.extend(variants[: self.num_exam_questions])
        return exam * self.num_repetitions


@exam_makers.register("metainfo")
class MetaInfoExamMaker(ExamMaker):
    """Other bank problems with the same metadata (e.g. subject, tag, level) as the teaching item.

    Args:
        exam_bank_dataset: The exam bank.
        match_keys: Keys whose values must match the teaching item's (e.g. ``["subject"]``).
        num_exam_questions: How many problems per teaching item.
        num_repetitions: How often each is asked.
        random: Sample (seeded) instead of taking the first matches.
        seed: Seed for `random`.
    """

    def __init__(self, exam_bank_dataset: list[dict], match_keys: list[str] | tuple = ("subject",),
                 num_exam_questions: int = 3, num_repetitions: int = 1, random: bool = False, seed: int = 0):
        super().__init__(exam_bank_dataset)
        self.match_keys = list(match_keys)
        self.required_fields = tuple(self.match_keys)
        self.num_exam_questions = num_exam_questions
        self.num_repetitions = num_repetitions
        self.random = random
        self.seed = seed

    def make_exam_questions(self, teaching_items):
        self._need_items(teaching_items, "metainfo")
        exam = []
        for item in teaching_items:
            pool = [r for r in self.exam_bank
                    if all(r.get(k) == item.get(k) for k in self.match_keys)
                    and r.get("question") != item.get("question")
                    and (item.get("unique_id") is None or r.get("unique_id") != item.get("unique_id"))]
            if len(pool) < self.num_exam_questions:
                raise LbtError(f"exam_maker_cfg.num_exam_questions: {self.num_exam_questions} asked but only "
                               f"{len(pool)} bank problems match {self.match_keys} of {item.get('unique_id')!r}")
            if self.random:
                rng = _random.Random(f"{self.seed}:{item.get('unique_id', item.get('question'))}")
                pool = rng.sample(pool, self.num_exam_questions)
            exam.extend(pool[: self.num_exam_questions])
        return exam * self.num_repetitions

