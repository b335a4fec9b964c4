"""Build a run's parts from its config: data, prompt format, scorer, exam maker, teacher, students."""

from __future__ import annotations

from dataclasses import dataclass

from .adapter import TemplateAdapter, exam_prompters
from .config import M1Config
from .data import TaskData, datasets
from .errors import LbtError
from .exam import ExamMaker, exam_makers
from .lbt_score import LbTScore
from .m1.program import M1
from .models import ModelPool
from .scoring import ExamScorer, exam_scorers
from .student import Student
from .teacher import Teacher


@dataclass
class Components:
    data: TaskData
    scorer: ExamScorer
    adapter: TemplateAdapter
    exam_maker: ExamMaker


def build_components(cfg: M1Config, data: TaskData | None = None) -> Components:
    """Everything but the models (no server is started)."""
    section = vars(cfg)
    data = data or datasets.build(section)
    scorer = exam_scorers.build(section)
    adapter = exam_prompters.build(section, extract_answer=scorer.extract)
    maker = exam_makers.build(section, exam_bank_dataset=data.exam_bank)
    return Components(data, scorer, adapter, maker)


def build_teacher(cfg: M1Config, pool: ModelPool, adapter, greedy: bool = False) -> Teacher:
    sample = dict(cfg.teacher_sample_cfg)
    if greedy:
        sample.update(cfg.greedy_sample_cfg)
    lm = pool.lm(cfg.teacher_model_cfg, sample, where="teacher_model_cfg")
    return Teacher(lm=lm, adapter=adapter, num_pairs=1 if greedy else cfg.num_pairs,
                   num_threads=cfg.concurrency)


def build_students(cfg: M1Config, pool: ModelPool, adapter) -> list[Student]:
    students, names = [], set()
    for i, entry in enumerate(cfg.student_model_cfgs):
        lm = pool.lm(entry, cfg.general_student_sample_cfg, where=f"student_model_cfgs[{i}]")
        name = lm.lbt_name
        if name in names:  # the same model twice (e.g. two sampling settings) still needs two columns
            name = f"{name}#{i}"
        names.add(name)
        students.append(Student(lm=lm, adapter=adapter, name=name))
    if not students:
        raise LbtError("student_model_cfgs: no students")
    return students


def build_m1(cfg: M1Config, pool: ModelPool, parts: Components, method: str = "M1 SUM") -> M1:
    """The `M1` program of a config — the module `lbt m1` runs (``concurrency`` is its ``num_threads``).
    The config's task decides how it selects (`lbt_dspy.tasks`): code is M1 MAX, never voted, ties broken by
    the V-score."""
    from .tasks import task_for

    task = task_for(cfg)
    lbt = LbTScore(build_students(cfg, pool, parts.adapter), parts.exam_maker, parts.scorer,
                   num_threads=cfg.concurrency)
    return M1(build_teacher(cfg, pool, parts.adapter), lbt, method=task.m1_method(method),
              num_threads=cfg.concurrency, exam_budget=cfg.exam_budget_cfg if cfg.exam_budget == "adaptive" else None,
              vote=task.vote, tie_break=task.tie_break)
