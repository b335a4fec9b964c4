"""The LbT score of a TR-TA pair: how well students who learn from it do on its exam."""

from __future__ import annotations

import asyncio
from statistics import mean
from typing import Iterable, Mapping, Sequence

import dspy

from .errors import LbtError
from .records import prediction_record
from .runner import parallel, recorded
from .scoring.base import ExamScorer
from .student import Student


def lbt_scores(exam_scores: Mapping[str, Sequence[float | None]]) -> tuple[dict[str, float | None], float | None]:
    """LbT scores from exam results: the one aggregation (the module, the run's results and M2 pairs use it).

    Args:
        exam_scores: Per student, the scores of the exam problems it took (None entries are ignored).

    Returns:
        ``(per_student, combined)``: per student, the mean of its scores; combined, the mean over the
        students. A student who took nothing has None (not examined — never 0), and combined is None
        when no student has a score.

    Example:
        >>> lbt_scores({"a": [1, 0, 1, 1], "b": [0, 0]})
        ({'a': 0.75, 'b': 0.0}, 0.375)
        >>> lbt_scores({"a": []})
        ({'a': None}, None)
    """
    per = {}
    for student, scores in exam_scores.items():
        vals = [float(s) for s in scores if s is not None]
        per[student] = mean(vals) if vals else None
    given = [v for v in per.values() if v is not None]
    return per, (mean(given) if given else None)


def exam_prediction(students: Iterable[str], exam: Sequence[Mapping], taken) -> dspy.Prediction:
    """The LbT score of the exam problems taken: from ``(student, slot, record)`` triples (``answer``,
    ``score``), ``score`` (combined), ``per_student`` and ``exam`` (per student: ``questions``, ``answers``,
    ``scores`` in slot order)."""
    by_student = {name: {"questions": [], "answers": [], "scores": []} for name in students}
    for name, slot, rec in sorted(taken, key=lambda t: t[1]):
        by_student[name]["questions"].append(exam[slot]["question"])
        by_student[name]["answers"].append(rec["answer"])
        by_student[name]["scores"].append(rec["score"])
    per, combined = lbt_scores({n: e["scores"] for n, e in by_student.items()})
    return dspy.Prediction(score=combined, per_student=per, exam=by_student)


class LbTScore(dspy.Module):
    """Scores a TR-TA pair by the students' exam: every student takes every exam problem, taught by the
    pair; the score is the mean accuracy per student, then over students (`lbt_scores`).

    Args:
        students: The `Student` modules that take the exam.
        exam_maker: Gives the exam problems of a teaching item (see `lbt_dspy.exam`).
        scorer: Extracts and scores the students' answers.
        num_threads: Exam calls in flight at once when called on its own (inside `M1` or a run, theirs bound
            them: `lbt_dspy.runner`).

    Inside a run (`lbt_dspy.runner.record_scope`) each exam answer is replayed from the run directory when
    recorded there, else made and recorded (stage ``exam``, keyed ``tp/pair/student/slot``).

    Example:
        >>> lbt = LbTScore([Student(lm)], FunctionalExamMaker(bank), MathScorer())  # doctest: +SKIP
        >>> out = lbt(item={"unique_id": "a", "question": "2+2?"}, rationale="2+2=4", answer="4")  # doctest: +SKIP
        >>> out.score, out.per_student  # doctest: +SKIP
        (0.67, {'smollm2-135m': 0.67})
        >>> evaluate = dspy.Evaluate(devset=tps, metric=lbt.metric)  # as a DSPy metric  # doctest: +SKIP
    """

    def __init__(self, students: list[Student], exam_maker, scorer: ExamScorer, num_threads: int = 8):
        super().__init__()
        self.students = list(students)
        self.exam_maker = exam_maker
        self.scorer = scorer
        self.num_threads = num_threads

    def exam(self, item: Mapping) -> list[dict]:
        """The exam problems of teaching item `item`; a field the exam maker needs and `item` lacks is a
        one-line `LbtError` naming it."""
        item = dict(item)
        if "question" not in item:
            raise LbtError("LbTScore: the teaching item has no 'question' field")
        need = getattr(self.exam_maker, "required_fields", ())
        missing = [f for f in need if f not in item]
        if missing:
            raise LbtError(f"LbTScore: the teaching item has no {missing[0]!r} field, which exam maker "
                           f"{type(self.exam_maker).__name__} needs (item fields: {', '.join(sorted(item))})")
        return self.exam_maker.make_exam_questions([item])

    def forward(self, item: Mapping, rationale: str, answer: str, slots: Iterable[int] | None = None
                ) -> dspy.Prediction:
        """The LbT score of the pair (`rationale`, `answer`) for teaching item `item` (its ``question`` and
        whatever the exam maker reads, e.g. ``unique_id``): every student takes the exam problems at `slots`
        (all by default), taught by the pair. Returns ``score``, ``per_student`` and ``exam``."""
        exam = self.exam(item)
        demo = dspy.Example(question=item["question"], rationale=rationale, answer=answer)
        slots = range(len(exam)) if slots is None else slots
        todo = [(student, slot) for student in self.students for slot in slots]
        records = parallel([lambda s=s, slot=slot: self.take(s, exam[slot], demo, slot) for s, slot in todo],
                           owner=self, num_threads=self.num_threads)
        return exam_prediction([s.name for s in self.students], exam,
                               [(s.name, slot, rec) for (s, slot), rec in zip(todo, records)])

    async def aforward(self, item: Mapping, rationale: str, answer: str, slots: Iterable[int] | None = None
                       ) -> dspy.Prediction:
        return await asyncio.to_thread(type(self).forward, self, item, rationale, answer, slots)

    def take(self, student: Student, problem: Mapping, demo: dspy.Example, slot: int) -> dict:
        """One exam answer: `student`, taught by `demo`, answers exam problem `problem` (at `slot`); its
        record (``answer``, ``score``, what the model said)."""
        def make():
            pred = student(question=problem["question"], demos=[demo], rollout_id=slot)
            return {**prediction_record(pred), "score": self.scorer.score(pred.answer, self.scorer.reference(problem))}

        return recorded("exam", {"student": student.name, "slot": slot}, make)

    def metric(self, example, pred, trace=None) -> float:
        """A DSPy metric: `example` is the teaching item (a `dspy.Example` or dict with ``question`` and what
        the exam maker needs), `pred` carries ``rationale`` and ``answer``. Not examined: 0."""
        return self(item=dict(example), rationale=pred.rationale, answer=pred.answer).score or 0.0
