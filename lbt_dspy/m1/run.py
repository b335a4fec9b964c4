"""The resumable `lbt m1` run: M1 over a dataset, every generation recorded in a run directory.

For each teaching problem (TP): the teacher samples TR-TA pairs; each pair teaches every student, who
takes the TP's exam; the students' mean accuracy is the pair's LbT score; the answer is chosen by
M1 (MAX) or M1 (SUM), next to the greedy and self-consistency (SC) baselines.
"""

from __future__ import annotations

import logging
from pathlib import Path

import dspy

from ..components import build_components, build_students, build_teacher
from ..config import LbtConfig
from ..errors import LbtError
from ..models import ModelPool
from ..runner import Job, run_jobs
from ..store import RunStore

log = logging.getLogger("lbt_dspy")


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
        by_key = dict(zip(keys, tps))

        def exam_jobs(k, i, slots):
            pair = pairs.get(f"{k}/{i}")
            if pair is None:
                return []  # its generation failed; a rerun makes it, then its exam
            tp = by_key[k]
            demo = dspy.Example(question=tp["question"], rationale=pair["rationale"], answer=pair["answer"])
            return [Job(f"{k}/{i}/{student.name}/{slot}",
                        (lambda s=student, q=exams[k][slot]["question"], d=demo, slot=slot:
                         s(question=q, demos=[d], rollout_id=slot)),
                        finish({"tp": k, "sample": i, "student": student.name, "slot": slot},
                               scorer.reference(exams[k][slot])))
                    for student in students for slot in slots]

        if cfg.exam_budget == "adaptive":  # rounds of exams, only where they can still change the pick
            _adaptive_exam_stage(cfg, store, keys, exams, pairs, students, scorer.equivalent, exam_jobs, calls,
                                 progress)
        else:
            jobs = [j for k in keys for i in range(cfg.num_rationales) for j in exam_jobs(k, i, range(len(exams[k])))]
            _stage(store, "exam", jobs, cfg, calls, "exam (students)", progress)
    store.close()
    return calls


def _stage(store, stage, jobs, cfg, calls, desc, progress, on_done=None, done=None):
    rep = run_jobs(store, stage, jobs, cfg.concurrency, desc, progress, on_done=on_done, done=done)
    calls[stage] += rep.ran + rep.failed
    calls["failed"] += rep.failed
    if rep.errors:
        calls["error"] = calls["error"] or f"after {cfg.num_retries + 1} attempt(s) each, e.g. {rep.errors[0]}"
        log.error("%s: %d call(s) failed after %d attempt(s) each, e.g. %s", stage, rep.failed, cfg.num_retries + 1,
                  rep.errors[0])


def _adaptive_exam_stage(cfg, store, keys, exams, pairs, students, equivalent, exam_jobs, calls, progress):
    """``exam_budget: adaptive``: exams chosen by the racing scheduler (`lbt_dspy.adaptive`), pipelined.

    Each teaching problem (TP) races on its own: as soon as its last round is recorded, the scheduler
    picks its next exam problems, which go to the front of the queue (a pair's exams together), so
    the servers stay busy while any TP is undecided; there is no barrier between rounds. The scheduler
    reads only recorded results, so an interrupted run resumes to the same decisions. A failed call
    stops its TP's race for this run (a rerun goes on). Writes ``exam_budget.json``.
    """
    from .adaptive import exam_scheduler
    from .results import memo_equivalent
    from .select import group_answers

    eq = memo_equivalent(equivalent)
    samples, groups, scheds, results = {}, {}, {}, {}
    done = store.load("exam")
    for k in keys:
        samples[k] = [i for i in range(cfg.num_rationales) if f"{k}/{i}" in pairs]
        gid = [None] * len(samples[k])  # unparseable answers vote for nothing and take no exam
        for g, members in enumerate(group_answers([pairs[f"{k}/{i}"]["answer"] for i in samples[k]], eq)):
            for j in members:
                gid[j] = g
        groups[k] = gid
        scheds[k] = exam_scheduler(cfg.exam_budget_cfg, len(exams[k]), len(students))
        results[k] = [[None] * len(exams[k]) for _ in samples[k]]
    names = [s.name for s in students]

    def update(k, j, slot):  # a slot counts once every student has taken it
        recs = [done.get(f"{k}/{samples[k][j]}/{n}/{slot}") for n in names]
        if None not in recs:
            results[k][j][slot] = sum(r["score"] for r in recs) / len(recs)

    for k in keys:
        for j in range(len(samples[k])):
            for slot in range(len(exams[k])):
                update(k, j, slot)

    waiting = {k: 0 for k in keys}  # per TP: its jobs queued or running
    rounds = {k: 0 for k in keys}
    stopped: set = set()
    where = {}  # job key -> (TP, pair, slot)

    def plan(k) -> list:
        """The TP's next round: its exam jobs, a pair's together."""
        todo = scheds[k].next_slots(groups[k], results[k])
        batch = []
        for j, slots in todo.items():
            for slot in slots:
                for job in exam_jobs(k, samples[k][j], [slot]):
                    if job.key not in done:
                        where[job.key] = (k, j, slot)
                        batch.append(job)
        rounds[k] += bool(todo)
        waiting[k] += len(batch)
        return batch

    def on_done(job, record):  # a TP's next round goes to the front as soon as its last one is in
        k, j, slot = where[job.key]
        waiting[k] -= 1
        if record is None:
            stopped.add(k)  # its race waits for a rerun
        else:  # `run_jobs` has put the record in `done`
            update(k, j, slot)
        return plan(k) if waiting[k] == 0 and k not in stopped else []

    first = [job for k in keys for job in plan(k)]
    _stage(store, "exam", first, cfg, calls, "exam (adaptive)", progress, on_done=on_done, done=done)
    used = sum(v is not None for k in keys for row in results[k] for v in row) * len(students)
    full = sum(len(samples[k]) * len(exams[k]) for k in keys) * len(students)
    store.write_json("exam_budget.json", {
        "exam_budget": "adaptive", "exam_budget_cfg": cfg.exam_budget_cfg, "complete": not stopped,
        "max_rounds_this_run": max(rounds.values(), default=0), "student_generations": used,
        "full_exam_generations": full, "fraction": round(used / full, 4) if full else 0.0})
    log.info("adaptive exams: %d of %d student generations (%.1f%%)", used, full, 100 * used / max(full, 1))
