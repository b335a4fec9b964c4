"""Exams: which exam problems (EPs) a teaching item brings, and which items teach each exam."""

from .makers import ExamMaker, FixedExamMaker, FunctionalExamMaker, MetaInfoExamMaker, exam_makers
from .plans import TeachingPlan, resolve_teaching_plans

__all__ = ["ExamMaker", "FixedExamMaker", "FunctionalExamMaker", "MetaInfoExamMaker", "exam_makers",
           "TeachingPlan", "resolve_teaching_plans"]
from . import similar as _similar  # noqa: E402,F401  (registers the `similar` and `ques_similarity` exam makers)
from . import seed_makers as _seed_makers  # noqa: E402,F401  (math_metainfo, code_metainfo, code_fixed_exam)
from . import unsupported as _unsupported  # noqa: E402,F401  (seed scorers lbt refuses with a hint)
