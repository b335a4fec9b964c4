"""Exam scorers: turn a model's output into an answer and score it against the reference."""

from .base import ExamScorer, exam_scorers
from .classification import ClassificationScorer
from .code import CodeScorer, extract_code
from .math import MathScorer, answers_equivalent, extract_math_answer

__all__ = ["ExamScorer", "exam_scorers", "MathScorer", "answers_equivalent", "extract_math_answer",
           "CodeScorer", "extract_code", "ClassificationScorer"]
