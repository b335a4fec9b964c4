"""`lbt exam`: the seed's scripts/exam.py — students take exams taught by the teaching plans."""

from __future__ import annotations

from pathlib import Path
from statistics import mean

import dspy

from ..components import build_components, build_students
from ..config import LbtConfig
from ..data import TaskData, read_jsonl
from ..errors import LbtError
from ..models import ModelPool
from ..runner import Job, run_jobs
from ..store import RunStore
from .plans import resolve_teaching_plans


def load_items(path: str | Path) -> list[dict]:
    """A dataset file: JSONL, or a directory saved by `datasets` (the seed's format).
    ``problem`` is read as ``question`` and ``solution`` as ``rationale``."""
    path = Path(path)
    if path.is_dir():
        from datasets import load_from_disk

        try:
            rows = [dict(r) for r in load_from_disk(str(path))]
        except Exception as exc:
            raise LbtError(f"{path}: not a saved dataset ({exc})") from None
    else:
        rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        if "question" not in row and "problem" in row:
            row["question"] = row.pop("problem")
        if "rationale" not in row and "solution" in row:
            row["rationale"] = row.pop("solution")
        if "question" not in row:
            raise LbtError(f"{path}:{n}: row has no 'question'")
    if not rows:
        raise LbtError(f"{path}: empty dataset")
    return rows


def run_exam(cfg: LbtConfig, output_path: str | Path, exam_dataset_file: str | Path,
             teaching_dataset_file: str | Path | None = None, progress: bool = True) -> dict:
    """Every plan's exam for every student; records in ``exam.jsonl``, one row per plan in ``dataset.jsonl``."""
    bank = load_items(exam_dataset_file)
    teaching = load_items(teaching_dataset_file) if teaching_dataset_file else []
    if cfg.teaching_plans != "no demo" and not teaching:
        raise LbtError("teaching_plans: plans other than 'no demo' need --teaching-dataset-file")
    plans = resolve_teaching_plans(cfg.teaching_plans, len(teaching))
    parts = build_components(cfg, TaskData(teaching, bank))
    store = RunStore(output_path, {**cfg.to_dict(), "exam_dataset_file": str(exam_dataset_file),
                                   "teaching_dataset_file": str(teaching_dataset_file)})
    n_return = int({**cfg.general_student_sample_cfg}.get("num_return_sequences", 1))
    with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries) as pool:
        students = build_students(cfg, pool, parts.adapter)
        exams, jobs = [], []
        for p, plan in enumerate(plans):
            items = [teaching[i] for i in plan.indexes]
            exam = parts.exam_maker.make_exam_questions(items)
            exams.append((items, exam))
            demos = [dspy.Example(**{k: it[k] for k in ("question", "rationale", "answer") if k in it})
                     for it in items] if plan.show_demos else []
            for student in students:
                for q, ep in enumerate(exam):
                    for r in range(n_return):
                        slot = q * n_return + r
                        jobs.append(Job(f"{p}/{student.name}/{q}/{r}",
                                        (lambda s=student, ep=ep, d=demos, slot=slot:
                                         s(question=ep["question"], demos=d, rollout_id=slot)),
                                        _finish(parts.scorer, {"plan": p, "student": student.name, "q": q, "r": r},
                                                ep.get("answer"))))
        rep = run_jobs(store, "exam", jobs, cfg.concurrency, "exam", progress)
    store.close()
    records = store.load("exam")
    rows = []
    for p, (items, exam) in enumerate(exams):
        details, scores = {}, {}
        for student in students:
            recs = [records.get(f"{p}/{student.name}/{q}/{r}") for q in range(len(exam)) for r in range(n_return)]
            recs = [r for r in recs if r]
            details[student.name] = {"rationales": [r["rationale"] for r in recs],
                                     "answers": [r["answer"] for r in recs], "scores": [r["score"] for r in recs]}
            scores[student.name] = mean(r["score"] for r in recs) if recs else None
        rows.append({"teaching_items": items, "exam_questions": [e["question"] for e in exam],
                     "exam_gt_rationales": [e.get("rationale") for e in exam],
                     "exam_gt_answers": [e.get("answer") for e in exam], "exam_details": details, "scores": scores})
    import json

    store.write_text("dataset.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return {"calls": rep.ran + rep.failed, "failed": rep.failed, "plans": len(plans),
            "scores": [r["scores"] for r in rows]}


def _finish(scorer, meta, reference):
    def f(pred):
        score = scorer.score(pred.answer, reference) if reference is not None else None
        return {**meta, "rationale": pred.rationale, "answer": pred.answer, "score": score}
    return f
