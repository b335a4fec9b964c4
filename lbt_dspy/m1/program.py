"""The M1 program: teach, examine, score, select — one problem at a time, as a DSPy module."""

from __future__ import annotations

import asyncio

import dspy

from ..lbt_score import LbTScore, exam_prediction
from ..runner import bounded, branches
from ..teacher import Teacher
from .select import METHODS, Pair, group_answers


class M1(dspy.Module):
    """Answers one problem the LbT way: the teacher samples TR-TA pairs, each pair teaches the students,
    who take the problem's exam; the answer is picked by the pairs' LbT scores.

    Args:
        teacher: Samples the TR-TA pairs.
        lbt_score: Scores a pair by the students' exam (an `LbTScore`).
        method: ``"M1 SUM"`` (score-weighted vote over equivalent answers), ``"M1 MAX"``, or ``"SC"``.
        num_threads: LM calls in flight at once (the teacher's samples, then every pair's exam problems for
            every student; a pair's exam problems are queued together). Calls of concurrent `forward`s
            (e.g. under `dspy.Evaluate`) share this bound.
        exam_budget: None: every pair takes the full exam (the paper). A mapping (``exam_budget_cfg`` of a
            config, e.g. ``{"confidence": 0.95}``): adaptive exams, racing the answer groups so only pairs
            that can still change the M1 MAX/SUM pick take more exam problems (`lbt_dspy.m1.adaptive`).
        vote: Group equivalent answers (math). False for code, whose answers are not voted.
        tie_break: ``"v_score"`` (code): M1 MAX ties go to the answer passing more of the teaching problem's
            visible tests (the scorer scores the teacher's answer against the item).

    Example:
        >>> m1 = M1(Teacher(lm=teacher_lm, num_pairs=8),  # doctest: +SKIP
        ...         LbTScore([Student(lm=student_lm)], FunctionalExamMaker(bank), MathScorer()), num_threads=16)
        >>> pred = m1(**data.teaching[0])            # question=..., unique_id=...  # doctest: +SKIP
        >>> pred.answer, [p.lbt_score for p in pred.pairs]  # doctest: +SKIP
        >>> pred = await m1.acall(**data.teaching[0])  # doctest: +SKIP
    """

    def __init__(self, teacher: Teacher, lbt_score: LbTScore, method: str = "M1 SUM", num_threads: int = 16,
                 exam_budget: dict | None = None, vote: bool = True, tie_break: str | None = None):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}")
        if tie_break not in (None, "v_score"):
            raise ValueError(f"tie_break must be None or 'v_score', got {tie_break!r}")
        if not vote and method != "M1 MAX":
            raise ValueError("vote=False (code) leaves only method 'M1 MAX'")
        self.teacher = teacher
        self.lbt_score = lbt_score
        self.method = method
        self.num_threads = num_threads
        self.exam_budget = dict(exam_budget) if exam_budget is not None else None
        self.vote = vote
        self.tie_break = tie_break

    def forward(self, question: str | None = None, item: dict | None = None, **item_fields) -> dspy.Prediction:
        """Args: the teaching item's fields: ``question`` and whatever the exam maker reads (e.g.
        ``unique_id``); ``item=`` takes them as one mapping.

        Returns a `dspy.Prediction`: ``answer``, ``rationale`` and index (``pair``) of the picked pair, and ``pairs``,
        every pair (`Pair`: ``rationale``, ``answer``, ``lbt_score``, ``per_student``, ``exam`` with ``questions``,
        ``answers`` and ``scores`` per student; ``v_score`` for code). ``candidates``: the earlier name of ``pairs``.
        """
        item = {**dict(item or {}), **item_fields, **({"question": question} if question is not None else {})}
        if "question" not in item:
            raise TypeError("M1 needs the problem's question (question=...)")
        exam = self.lbt_score.exam(item)  # a field the exam needs and the item lacks: one line, before any call
        with bounded(self, self.num_threads):  # the calls of all its parts share one bound
            taught = self.teacher(question=item["question"])
            pairs = [Pair(c.answer, None, i, rationale=c.rationale) for i, c in enumerate(taught.completions)]
            budget = self.examine(item, exam, pairs)
        if self.tie_break == "v_score":
            reference = self.lbt_score.scorer.reference(item)
            for p in pairs:
                p.v_score = self.lbt_score.scorer.score(p.answer, reference)
        best = self.select(pairs)
        return dspy.Prediction(answer=best.answer if best else "", rationale=best.rationale if best else "",
                               pair=best.index if best else None, pairs=pairs, candidates=pairs,
                               exam_budget=budget)

    async def aforward(self, question: str | None = None, item: dict | None = None, **item_fields) -> dspy.Prediction:
        # The engines are synchronous HTTP clients: forward runs in a worker thread, its calls in the pool.
        return await asyncio.to_thread(type(self).forward, self, question, item, **item_fields)

    def select(self, pairs: list[Pair]) -> Pair | None:
        """The pick of `method` among scored pairs."""
        if not self.vote:
            return METHODS["M1 MAX"](pairs, None, tie_break=(lambda p: p.v_score) if self.tie_break else None)
        return METHODS[self.method](pairs, self.lbt_score.scorer.equivalent)

    # --- the exam ------------------------------------------------------------------------------
    def examine(self, item: dict, exam: list[dict], pairs: list[Pair]) -> dict:
        """Every pair takes its exam (`LbTScore`): the full exam at once, or adaptive rounds that race the
        answer groups. Fills in the pairs' scores; returns the generations used and the full exam's."""
        n_exam = len(exam)
        names = [s.name for s in self.lbt_score.students]
        taken: dict[int, list] = {p.index: [] for p in pairs}  # (student, slot, record) per pair
        if self.exam_budget is None:
            self._round(item, pairs, {p.index: range(n_exam) for p in pairs}, taken)
            rounds = 1
        else:
            rounds = self._race(item, pairs, n_exam, names, taken)
        for p in pairs:
            res = exam_prediction(names, exam, taken[p.index])
            p.lbt_score, p.per_student, p.exam = res.score, res.per_student, res.exam
        return {"generations": sum(len(t) for t in taken.values()),
                "full_exam_generations": len(pairs) * n_exam * len(names), "rounds": rounds}

    def _round(self, item: dict, pairs: list[Pair], slots_by_pair: dict, taken: dict) -> None:
        """One exam round: each pair (its problems queued together) takes the slots asked of it."""
        todo = [p for p in pairs if slots_by_pair.get(p.index)]

        def take(p: Pair) -> dspy.Prediction:
            return self.lbt_score(item=item, rationale=p.rationale, answer=p.answer, slots=slots_by_pair[p.index])

        for p, res in zip(todo, branches(take, todo, scope=lambda p: {"pair": p.index})):
            slots = sorted(slots_by_pair[p.index])
            for name, got in res.exam.items():
                taken[p.index].extend((name, slot, {"answer": a, "score": sc})
                                      for slot, a, sc in zip(slots, got["answers"], got["scores"]))

    def _race(self, item, pairs, n_exam, names, taken) -> int:
        """Adaptive exams: the scheduler reads the results so far and names the slots to take next."""
        from .adaptive import exam_scheduler

        sched = exam_scheduler(self.exam_budget, n_exam, len(names))
        group = [None] * len(pairs)  # unparseable answers vote for nothing and take no exam
        for g, members in enumerate(group_answers([p.answer for p in pairs], self.lbt_score.scorer.equivalent)):
            for j in members:
                group[j] = g
        results = [[None] * n_exam for _ in pairs]
        rounds = 0
        while True:
            todo = sched.next_slots(group, results)
            if not todo:
                return rounds
            rounds += 1
            self._round(item, pairs, {pairs[j].index: slots for j, slots in todo.items()}, taken)
            for j, slots in todo.items():  # a slot counts once every student has taken it
                got = {(n, s): rec["score"] for n, s, rec in taken[pairs[j].index]}
                for slot in slots:
                    vals = [got.get((n, slot)) for n in names]
                    results[j][slot] = sum(vals) / len(vals)
