"""M1: pick the teacher's final answer by LbT score — as a DSPy module and as a resumable run.

For each teaching problem (TP): the teacher samples TR-TA pairs; each pair teaches every student, who
takes the TP's exam; the students' mean accuracy is the pair's LbT score; the answer is chosen by
M1 (MAX) or M1 (SUM), next to the greedy and self-consistency (SC) baselines.
"""

from __future__ import annotations

import logging
from pathlib import Path
from statistics import mean

import dspy

from .components import build_components, build_students, build_teacher
from .config import LbtConfig
from .errors import LbtError
from .lbt_score import LbTScore
from .models import ModelPool
from .runner import Job, run_jobs
from .select import METHODS, Candidate
from .store import RunStore
from .student import Student
from .teacher import Teacher

log = logging.getLogger("lbt_dspy")


class M1(dspy.Module):
    """Answers one problem the LbT way: teach, examine, score, select.

    Args:
        teacher: Samples the TR-TA pairs.
        lbt_score: Scores a pair by the students' exam (an `LbTScore`).
        method: ``"M1 SUM"`` (score-weighted vote over equivalent answers) or ``"M1 MAX"``, or ``"SC"``.

    Example:
        >>> m1 = M1(Teacher(lm=teacher_lm, num_samples=8),  # doctest: +SKIP
        ...         LbTScore([Student(lm=student_lm)], FunctionalExamMaker(bank), MathScorer()))
        >>> pred = m1(item={"unique_id": "test/algebra/1.json", "question": "..."})  # doctest: +SKIP
        >>> pred.answer, [c.lbt_score for c in pred.candidates]  # doctest: +SKIP
    """

    def __init__(self, teacher: Teacher, lbt_score: LbTScore, method: str = "M1 SUM"):
        super().__init__()
        if method not in METHODS:
            raise ValueError(f"method must be one of {list(METHODS)}")
        self.teacher = teacher
        self.lbt_score = lbt_score
        self.method = method

    def forward(self, item: dict) -> dspy.Prediction:
        pairs = self.teacher(question=item["question"])
        candidates = [Candidate(p.answer, self.lbt_score(item=item, rationale=p.rationale, answer=p.answer).score, i)
                      for i, p in enumerate(pairs)]
        best = METHODS[self.method](candidates, self.lbt_score.scorer.equivalent)
        if best is None:
            return dspy.Prediction(answer="", rationale="", candidates=candidates)
        return dspy.Prediction(answer=best.answer, rationale=pairs[best.index].rationale, candidates=candidates)


# --- the resumable run -----------------------------------------------------------------------------
def tp_key(tp: dict, n: int) -> str:
    return str(tp.get("unique_id", f"tp{n}"))


def run_m1(cfg: LbtConfig, output_path: str | Path, progress: bool = True, log_dir: str | None = None) -> dict:
    """Run (or resume) M1 into `output_path`; returns the counts of LM calls made and failed.

    Stages, each appended to its JSONL as calls finish: ``greedy`` (teacher, temperature 0),
    ``teach`` (`num_rationales` TR-TA per TP), ``exam`` (every pair x student x exam problem).
    """
    parts = build_components(cfg)
    store = RunStore(output_path, cfg.to_dict())
    tps = parts.data.teaching
    keys = [tp_key(tp, n) for n, tp in enumerate(tps)]
    if len(set(keys)) != len(keys):
        raise LbtError("dataset: teaching problems need distinct unique_id values")
    exams = {k: parts.exam_maker.make_exam_questions([tp]) for k, tp in zip(keys, tps)}
    calls = {"greedy": 0, "teach": 0, "exam": 0, "failed": 0, "error": None}
    with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries, log_dir=log_dir) as pool:
        teacher = build_teacher(cfg, pool, parts.adapter)
        greedy = build_teacher(cfg, pool, parts.adapter, greedy=True)
        students = build_students(cfg, pool, parts.adapter)
        scorer = parts.scorer

        def finish(meta, reference, judge=False):
            def f(pred):
                rec = {**meta, "rationale": pred.rationale, "answer": pred.answer,
                       "score": scorer.score(pred.answer, reference)}
                if judge:  # teacher answers only: extra grades, e.g. code's hidden-test S-score
                    rec.update(scorer.judge(pred.answer, reference))
                return rec
            return f

        jobs = [Job(f"{k}", (lambda q=tp["question"]: greedy.sample(q, 0)),
                    finish({"tp": k}, scorer.reference(tp), True))
                for k, tp in zip(keys, tps)]
        _stage(store, "greedy", jobs, cfg, calls, "greedy (teacher)", progress)
        jobs = [Job(f"{k}/{i}", (lambda q=tp["question"], i=i: teacher.sample(q, i)),
                    finish({"tp": k, "sample": i}, scorer.reference(tp), True))
                for k, tp in zip(keys, tps) for i in range(cfg.num_rationales)]
        _stage(store, "teach", jobs, cfg, calls, "teach (TR-TA pairs)", progress)

        # Exams of one pair are queued together, so a server's prefix cache sees the shared demo.
        pairs = store.load("teach")
        jobs = []
        for k, tp in zip(keys, tps):
            for i in range(cfg.num_rationales):
                pair = pairs.get(f"{k}/{i}")
                if pair is None:
                    continue  # its generation failed; a rerun makes it, then its exam
                demo = dspy.Example(question=tp["question"], rationale=pair["rationale"], answer=pair["answer"])
                for student in students:
                    for slot, ep in enumerate(exams[k]):
                        jobs.append(Job(f"{k}/{i}/{student.name}/{slot}",
                                        (lambda s=student, q=ep["question"], d=demo, slot=slot:
                                         s(question=q, demos=[d], rollout_id=slot)),
                                        finish({"tp": k, "sample": i, "student": student.name, "slot": slot},
                                               scorer.reference(ep))))
        _stage(store, "exam", jobs, cfg, calls, "exam (students)", progress)
    store.close()
    return calls


def _stage(store, stage, jobs, cfg, calls, desc, progress):
    rep = run_jobs(store, stage, jobs, cfg.concurrency, desc, progress)
    calls[stage] += rep.ran + rep.failed
    calls["failed"] += rep.failed
    if rep.errors:
        calls["error"] = calls["error"] or f"after {cfg.num_retries + 1} attempt(s) each, e.g. {rep.errors[0]}"
        log.error("%s: %d call(s) failed after %d attempt(s) each, e.g. %s", stage, rep.failed, cfg.num_retries + 1,
                  rep.errors[0])
