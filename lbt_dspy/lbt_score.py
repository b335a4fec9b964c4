"""The LbT score: how well students who learn from what a teacher wrote do on an exam — a TR-TA pair (M1) or an
example set (M3)."""

from __future__ import annotations

import asyncio
import logging
from statistics import mean
from typing import Iterable, Mapping, Sequence

import dspy

from .errors import LbtError, backend_down
from .models.router import affinity
from .records import prediction_record
from .runner import parallel, recorded
from .scoring.base import ExamScorer
from .student import Student

log = logging.getLogger("lbt_dspy")


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
        per[student] = _mean(vals) if vals else None
    given = [v for v in per.values() if v is not None]
    return per, (_mean(given) if given else None)


def _mean(vals: list[float]) -> float:
    """`statistics.mean`, bit for bit, without its exact-fraction sum where that sum is exact anyway: one value,
    or whole numbers (exam scores are 0 or 1) whose float sum is exact and whose quotient Python rounds once,
    as `statistics.mean` does."""
    if len(vals) == 1:
        return vals[0] + 0.0  # as statistics.mean: -0.0 is 0.0
    if all(v.is_integer() and abs(v) <= 2**20 for v in vals) and len(vals) <= 2**20:
        return sum(vals) / len(vals)
    return mean(vals)


def exam_prediction(students: Iterable[str], exam: Sequence[Mapping], taken) -> dspy.Prediction:
    """The LbT score of the exam problems taken: from ``(student, slot, record)`` triples (``answer``,
    ``score``), ``score`` (combined), ``per_student``, ``exam`` (per student: ``questions``, ``answers``,
    ``scores`` in slot order) and ``records`` (per student, each exam problem's record by slot)."""
    by_student = {name: {"questions": [], "answers": [], "scores": []} for name in students}
    records: dict[str, dict] = {name: {} for name in students}
    for name, slot, rec in sorted(taken, key=lambda t: t[1]):
        by_student[name]["questions"].append(exam[slot].get("question"))
        by_student[name]["answers"].append(rec["answer"])
        by_student[name]["scores"].append(rec["score"])
        records[name][slot] = rec
    per, combined = lbt_scores({n: e["scores"] for n, e in by_student.items()})
    return dspy.Prediction(score=combined, per_student=per, exam=by_student, records=records)


class LbTScore(dspy.Module):
    """Scores what teaches by the students' exam: every student takes every exam problem taught by it — a TR-TA
    pair (M1) or an example set (M3) — and the score is the mean per student, then over students (`lbt_scores`).

    Args:
        students: The `Student` modules that take the exam.
        exam_maker: Gives the exam problems of a teaching item (see `lbt_dspy.exam`; M3: `FixedExamMaker` over the
            training examples).
        scorer: Extracts and scores the students' answers (`MathScorer`, `CodeScorer`; M3: `ClassificationScorer`).
        num_threads: Exam calls in flight at once when called on its own (inside `M1` or a run, theirs bound
            them: `lbt_dspy.runner`).
        skip_failed: An exam answer whose call failed (after the LM's retries) is left out of the score instead of
            raising (M3's rounds go on; they count it). A backend that is down still raises.

    Inside a run (`lbt_dspy.runner.record_scope`) each exam answer is replayed from the run directory when
    recorded there, else made and recorded (stage ``exam``, keyed ``tp/pair/student/slot``).

    Example:
        >>> lbt = LbTScore([Student(lm)], FunctionalExamMaker(bank), MathScorer())  # doctest: +SKIP
        >>> out = lbt(item={"unique_id": "a", "question": "2+2?"}, rationale="2+2=4", answer="4")  # doctest: +SKIP
        >>> out.score, out.per_student  # doctest: +SKIP
        (0.67, {'smollm2-135m': 0.67})
        >>> evaluate = dspy.Evaluate(devset=tps, metric=lbt.metric)  # as a DSPy metric  # doctest: +SKIP
        >>> exam = LbTScore(students, FixedExamMaker(train), ClassificationScorer(fields))  # M3  # doctest: +SKIP
        >>> exam(demos=example_set, slots=minibatch).records["student-a"]  # doctest: +SKIP
    """

    def __init__(self, students: list[Student], exam_maker, scorer: ExamScorer, num_threads: int = 8,
                 skip_failed: bool = False):
        super().__init__()
        self.students = list(students)
        self.exam_maker = exam_maker
        self.scorer = scorer
        self.num_threads = num_threads
        self.skip_failed = skip_failed

    def exam(self, item: Mapping | None = None) -> list[dict]:
        """The exam problems of teaching item `item` (None: an exam that needs none, e.g. `FixedExamMaker`'s); a
        field the exam maker needs and `item` lacks is a one-line `LbtError` naming it."""
        if item is None:
            return self.exam_maker.make_exam_questions([])
        item = dict(item)
        if "question" not in item:
            raise LbtError("LbTScore: the teaching item has no 'question' field")
        need = getattr(self.exam_maker, "required_fields", ())
        missing = [f for f in need if f not in item]
        if missing:
            raise LbtError(f"LbTScore: the teaching item has no {missing[0]!r} field, which exam maker "
                           f"{type(self.exam_maker).__name__} needs (item fields: {', '.join(sorted(item))})")
        return self.exam_maker.make_exam_questions([item])

    def forward(self, item: Mapping | None = None, rationale: str | None = None, answer: str | None = None,
                slots: Iterable[int] | None = None, demos: list | None = None) -> dspy.Prediction:
        """The LbT score of the pair (`rationale`, `answer`) for teaching item `item` (its ``question`` and
        whatever the exam maker reads, e.g. ``unique_id``), or of the example set `demos`: every student takes the
        exam problems at `slots` (all by default), taught by it. Returns ``score``, ``per_student``, ``exam`` and
        ``records``."""
        exam = self.exam(item)
        if demos is None:
            demos = [dspy.Example(question=item["question"], rationale=rationale, answer=answer)]
        slots = range(len(exam)) if slots is None else slots
        todo = [(student, slot) for student in self.students for slot in slots]
        # every exam prompt starts with the demos: they go to one replica, whose prefix cache holds them
        with affinity("exam\x00" + "\x00".join(str(sorted(dict(d).items())) for d in demos)):
            records = parallel([lambda s=s, slot=slot: self._answer(s, exam[slot], demos, slot) for s, slot in todo],
                               owner=self, num_threads=self.num_threads)
        return exam_prediction([s.name for s in self.students], exam,
                               [(s.name, slot, rec) for (s, slot), rec in zip(todo, records) if rec is not None])

    async def aforward(self, item: Mapping | None = None, rationale: str | None = None, answer: str | None = None,
                       slots: Iterable[int] | None = None, demos: list | None = None) -> dspy.Prediction:
        return await asyncio.to_thread(type(self).forward, self, item, rationale, answer, slots, demos)

    def take(self, student: Student, problem: Mapping, demos: list, slot: int) -> dict:
        """One exam answer: `student`, taught by `demos`, answers exam problem `problem` (at `slot`); its record
        (``answer``, ``score``, what the model said)."""
        def make():
            pred = student(demos=demos, rollout_id=slot, **student.inputs_of(problem))
            answer = pred.get(student.answer_field)
            return {**prediction_record(pred), "answer": answer,
                    "score": self.scorer.score(answer, self.scorer.reference(problem))}

        return recorded("exam", {"student": student.name, "slot": slot}, make)

    def _answer(self, student: Student, problem: Mapping, demos: list, slot: int) -> dict | None:
        try:
            return self.take(student, problem, demos, slot)
        except Exception as exc:
            if not self.skip_failed or backend_down(exc) is not None:
                raise
            log.debug("%s: exam problem %d: the call failed (%s: %s); left out", student.name, slot,
                      type(exc).__name__, str(exc)[:300])
            return None

    def metric(self, example, pred, trace=None) -> float:
        """A DSPy metric: `example` is the teaching item (a `dspy.Example` or dict with ``question`` and what
        the exam maker needs), `pred` carries ``rationale`` and ``answer``. Not examined: 0."""
        return self(item=dict(example), rationale=pred.rationale, answer=pred.answer).score or 0.0
