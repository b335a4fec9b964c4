"""Exams: which exam problems (EPs) a teaching item brings, and which items teach each exam."""

from .makers import ExamMaker, FixedExamMaker, FunctionalExamMaker, MetaInfoExamMaker, exam_makers
from .plans import TeachingPlan, resolve_teaching_plans

__all__ = ["ExamMaker", "FixedExamMaker", "FunctionalExamMaker", "MetaInfoExamMaker", "exam_makers",
           "TeachingPlan", "resolve_teaching_plans"]
from . import similar as _similar  # noqa: E402,F401  (registers the `similar` exam maker)
