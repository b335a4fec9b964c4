"""Exam makers (`exam_maker_type` / `exam_maker_cfg`): the exam problems for given teaching items.

Every exam problem is a dict with at least ``question`` and ``answer`` (the reference); the exam bank
is a list of such dicts. Makers are deterministic, so a resumed run sees the same exams.
"""

from __future__ import annotations

import random as _random

from ..errors import LbtError
from ..registry import Registry

exam_makers = Registry("exam_maker")


class ExamMaker:
    """Interface: ``make_exam_questions(teaching_items) -> list[dict]`` over an exam bank."""

    def __init__(self, exam_bank_dataset: list[dict]):
        self.exam_bank = list(exam_bank_dataset)

    def make_exam_questions(self, teaching_items: list[dict]) -> list[dict]:
        raise NotImplementedError


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

    def __init__(self, exam_bank_dataset: list[dict], selected_indexes: list[int] | None = None):
        super().__init__(exam_bank_dataset)
        if selected_indexes is not None:
            bad = [i for i in selected_indexes if not 0 <= i < len(self.exam_bank)]
            if bad:
                raise LbtError(f"exam_maker_cfg.selected_indexes: {bad[0]} is out of range (bank has {len(self.exam_bank)} rows)")
            self.exam_bank = [self.exam_bank[i] for i in selected_indexes]

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

    Example:
        >>> bank = [{"unique_id": "a", "question": f"v{i}", "answer": "1"} for i in range(3)]
        >>> [q["question"] for q in FunctionalExamMaker(bank, 2, 2).make_exam_questions([{"unique_id": "a"}])]
        ['v0', 'v1', 'v0', 'v1']
    """

    def __init__(self, exam_bank_dataset: list[dict], num_exam_questions: int = 3, num_repetitions: int = 3):
        super().__init__(exam_bank_dataset)
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
        self.num_exam_questions = num_exam_questions
        self.num_repetitions = num_repetitions
        self.random = random
        self.seed = seed

    def make_exam_questions(self, teaching_items):
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

