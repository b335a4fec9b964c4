"""`lbt exam`: the seed's scripts/exam.py and scripts/code_exam.py — students take exams taught by the
teaching plans.

Every exam generation is a `Student` call (the same module `lbt m1` runs), recorded in ``exam.jsonl`` as it
finishes (a rerun resumes). At the end the output path gets what the seed's script writes, with the
same columns and nesting: the ``save_to_disk`` dataset, ``dataset.csv``, ``dataset.json`` (and
``config.yaml``; ``dataset.jsonl`` holds the same rows), one row per plan::

    teaching_items, exam_questions, exam_gt_rationales, exam_gt_answers,
    exam_details: {student: {rationales: [[text]], answers: [[answer]], scores: [[score]]}},
    scores: {student: mean}; code scorers add task_id (after exam_gt_answers, as scripts/code_exam.py)

``exam_details`` is nested per exam question, then per returned sequence (``num_return_sequences``);
a rationale is the whole generated text, as the seed keeps it. So the seed's downstream scripts
(``prepare_teaching_dataset.py``, ``search_rationale.py``) read lbt's output unchanged.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from statistics import mean

import dspy

from ..components import build_components, build_students
from ..config import M1Config
from ..data import TaskData, read_jsonl
from ..data.jsonl import normalize_fields
from ..model_output import OutputCounts
from ..records import prediction_record
from ..errors import LbtError
from ..models import ModelPool
from ..runner import Job, run_jobs
from ..store import RunStore
from .plans import resolve_teaching_plans

log = logging.getLogger(__name__)



def load_items(path: str | Path) -> list[dict]:
    """A dataset file: JSONL, or a directory saved by `datasets` (the seed's format).
    ``problem``/``prompt`` are read as ``question``, ``solution`` as ``rationale`` and
    ``canonical_solution`` as ``answer`` when those are absent (the seed's renames)."""
    path = Path(path)
    if path.is_dir():
        from datasets import load_from_disk

        try:
            rows = [dict(r) for r in load_from_disk(str(path))]
        except Exception as exc:
            raise LbtError(f"{path}: not a saved dataset ({exc})") from None
    elif not path.exists():
        raise LbtError(f"{path}: no such file or directory")
    else:
        rows = read_jsonl(path)
    for n, row in enumerate(rows, 1):
        normalize_fields(row)  # the seed's renames
        if "question" not in row:
            raise LbtError(f"{path}:{n}: row has no 'question'")
    if not rows:
        raise LbtError(f"{path}: empty dataset")
    return rows


def _check_bank(bank: list[dict], scorer_type: str, path) -> None:
    need = "test" if scorer_type == "code" else "answer"
    for n, row in enumerate(bank, 1):
        if need not in row and not (need == "test" and ("visible" in row or "hidden" in row)):
            what = "its tests ('test')" if need == "test" else "a reference 'answer'"
            raise LbtError(f"{path}:{n}: exam bank row has no {need!r}; exam_scorer_type {scorer_type} scores "
                           f"against {what}")


def run_exam(cfg: M1Config, output_path: str | Path, exam_dataset_file: str | Path,
             teaching_dataset_file: str | Path | None = None, progress: bool = True) -> dict:
    """Every plan's exam for every student: records in ``exam.jsonl``; the seed's output dataset at the end."""
    if cfg.debug:
        log.warning("debug: true has no effect (the seed's scripts/exam.py never passed it on; its debug "
                    "re-prompt was unreachable)")
    bank = load_items(exam_dataset_file)
    _check_bank(bank, cfg.exam_scorer_type, exam_dataset_file)
    if cfg.teaching_plans != "no demo" and not teaching_dataset_file:
        raise LbtError("teaching_plans: plans other than 'no demo' need --teaching-dataset-file")
    teaching = load_items(teaching_dataset_file) if teaching_dataset_file else []
    plans = resolve_teaching_plans(cfg.teaching_plans, len(teaching))
    parts = build_components(cfg, TaskData(teaching, bank))
    exams = [([teaching[i] for i in plan.indexes], None) for plan in plans]
    exams = [(items, parts.exam_maker.make_exam_questions(items)) for items, _ in exams]  # errors before any call
    code = cfg.exam_scorer_type == "code"
    fresh = not (Path(output_path) / "config.yaml").exists()
    store = RunStore(output_path, {**cfg.to_dict(), "exam_dataset_file": str(exam_dataset_file),
                                   "teaching_dataset_file": None if teaching_dataset_file is None
                                   else str(teaching_dataset_file)})
    with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries) as pool:
        try:
            students = build_students(cfg, pool, parts.adapter)
        except LbtError:
            if fresh:  # a model entry was wrong: leave no run behind that would refuse the corrected config
                store.close()
                _remove_new_run(Path(output_path))
            raise
        returns = [_num_return(cfg, i) for i in range(len(students))]
        jobs = []
        # A rollout id per generation of a student: every plan samples afresh, as the seed's calls did (two plans
        # with the same demo and question would otherwise share DSPy's cached answer).
        rollout = {student.name: 0 for student in students}
        for p, (plan, (items, exam)) in enumerate(zip(plans, exams)):
            demos = [dspy.Example(**{k: it[k] for k in ("question", "rationale", "answer") if k in it})
                     for it in items] if plan.show_demos else []
            for student, n_return in zip(students, returns):
                for q, ep in enumerate(exam):
                    for r in range(n_return):
                        slot = rollout[student.name]
                        rollout[student.name] += 1
                        jobs.append(Job(f"{p}/{student.name}/{q}/{r}",
                                        (lambda s=student, ep=ep, d=demos, slot=slot:
                                         s(question=ep["question"], demos=d, rollout_id=slot)),
                                        _finish(parts.scorer, {"plan": p, "student": student.name, "q": q, "r": r},
                                                parts.scorer.reference(ep))))
        rep = run_jobs(store, "exam", jobs, cfg.concurrency, "exam", progress)
    store.close()
    records = store.load("exam")
    rows = [_seed_row(p, items, exam, students, returns, records, code) for p, (items, exam) in enumerate(exams)]
    if not rep.failed:
        write_seed_output(store.path, rows)
    answers = {f"exam: {s.name}": OutputCounts.of(r for r in records.values() if r.get("student") == s.name).as_dict()
               for s in students}
    return {"calls": rep.ran + rep.failed, "failed": rep.failed, "plans": len(plans),
            "errors": rep.errors, "scores": [r["scores"] for r in rows], "answers": answers}


def _remove_new_run(path: Path) -> None:
    for name in ("config.yaml", ".lock"):
        (path / name).unlink(missing_ok=True)
    try:
        path.rmdir()  # only if nothing else is there
    except OSError:
        pass


def _num_return(cfg: M1Config, i: int) -> int:
    """The seed's `num_return_sequences`: the entry's own sample_cfg overrides the general one."""
    entry = cfg.student_model_cfgs[i]
    merged = {**(cfg.general_student_sample_cfg or {}), **((entry.get("sample_cfg") if isinstance(entry, dict)
                                                             else None) or {})}
    n = merged.get("num_return_sequences", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise LbtError(f"student_model_cfgs[{i}]: num_return_sequences must be an integer >= 1, got {n!r}")
    return n


def _seed_row(p, items, exam, students, returns, records, code: bool) -> dict:
    details, scores = {}, {}
    for student, n_return in zip(students, returns):
        per_q = [[records.get(f"{p}/{student.name}/{q}/{r}") for r in range(n_return)] for q in range(len(exam))]
        details[student.name] = {
            "rationales": [[rec.get("completion", rec["rationale"]) if rec else None for rec in qs] for qs in per_q],
            "answers": [[rec["answer"] if rec else None for rec in qs] for qs in per_q],
            "scores": [[rec["score"] if rec else None for rec in qs] for qs in per_q],
        }
        flat = [rec["score"] for qs in per_q for rec in qs if rec and rec["score"] is not None]
        scores[student.name] = mean(flat) if flat else None
    row = {"teaching_items": items, "exam_questions": [e["question"] for e in exam],
           "exam_gt_rationales": [e.get("rationale") for e in exam],
           "exam_gt_answers": [e.get("answer") for e in exam]}
    if code:  # scripts/code_exam.py adds it, before exam_details
        row["task_id"] = [e.get("task_id") for e in exam]
    return {**row, "exam_details": details, "scores": scores}


def write_seed_output(path: Path, rows: list[dict]) -> None:
    """What the seed's scripts/exam.py writes next to config.yaml: the ``save_to_disk`` dataset,
    ``dataset.csv`` and ``dataset.json``; lbt adds ``dataset.jsonl`` (the same rows)."""
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar

    disable_progress_bar()  # three instant writes; lbt's own bar showed the work
    path = Path(path)
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    tmp = path / f".dataset.jsonl.tmp"
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path / "dataset.jsonl")
    ds = Dataset.from_list(rows)
    ds.save_to_disk(str(path))
    ds.to_csv(str(path / "dataset.csv"))
    ds.to_json(str(path / "dataset.json"), indent=2)


def _finish(scorer, meta, reference):
    def f(pred):
        score = scorer.score(pred.answer, reference) if reference is not None else None
        return {**prediction_record(pred, **meta), "score": score}
    return f
