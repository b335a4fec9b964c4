"""Build a run's parts from its config: data, prompt format, scorer, exam maker, teacher, students."""

from __future__ import annotations

from dataclasses import dataclass

from .adapter import TemplateAdapter, exam_prompters
from .config import LbtConfig
from .data import TaskData, datasets
from .errors import LbtError
from .exam import ExamMaker, exam_makers
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


def build_components(cfg: LbtConfig, data: TaskData | None = None) -> Components:
    """Everything but the models (no server is started)."""
    section = vars(cfg)
    data = data or datasets.build(section)
    scorer = exam_scorers.build(section)
    adapter = exam_prompters.build(section, extract_answer=scorer.extract)
    maker = exam_makers.build(section, exam_bank_dataset=data.exam_bank)
    return Components(data, scorer, adapter, maker)


def build_teacher(cfg: LbtConfig, pool: ModelPool, adapter, greedy: bool = False) -> Teacher:
    sample = dict(cfg.teacher_sample_cfg)
    if greedy:
        sample.update(cfg.greedy_sample_cfg)
    lm = pool.lm(cfg.teacher_model_cfg, sample, where="teacher_model_cfg")
    return Teacher(lm=lm, adapter=adapter, num_samples=1 if greedy else cfg.num_rationales)


def build_students(cfg: LbtConfig, pool: ModelPool, adapter) -> list[Student]:
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
