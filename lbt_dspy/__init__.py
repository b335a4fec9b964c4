"""lbt_dspy: LLMs that learn by teaching (LbT), as DSPy programs.

teach -> exam -> score -> use the score: `Teacher` samples TR-TA pairs, `Student`s take exams taught by
each pair, `LbTScore` turns their accuracy into a score, and `M1` picks the final answer by it.
"""

import os

# litellm (under DSPy) would try to download a model-cost map at import; this machine may be offline.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from .model_output import quiet_answer_notices  # noqa: E402

quiet_answer_notices()  # what a model said (cut off, unparsed) is data in the reports, not a console warning

from .adapter import TemplateAdapter  # noqa: E402
from .config import M1Config  # noqa: E402
from .errors import LbtError  # noqa: E402
from .exam import FixedExamMaker, FunctionalExamMaker, MetaInfoExamMaker, resolve_teaching_plans  # noqa: E402
from .lbt_score import LbTScore, lbt_scores  # noqa: E402
from .lm import lm  # noqa: E402  (the function shadows its module: lbt_dspy.lm(...) builds an LM)
from .m1 import M1, run_m1  # noqa: E402
from .models import ModelPool  # noqa: E402
from .scoring import MathScorer, answers_equivalent, extract_math_answer  # noqa: E402
from .m1.select import Pair, m1_max, m1_sum, self_consistency  # noqa: E402
from .signatures import SolveProblem  # noqa: E402
from .student import Student  # noqa: E402
from .teacher import Teacher  # noqa: E402

from .renamed import renamed  # noqa: E402

__getattr__ = renamed(__name__, {"LbtConfig": ("M1Config", lambda: M1Config), "Candidate": ("Pair", lambda: Pair)})

__version__ = "0.1.0"
__all__ = ["TemplateAdapter", "M1Config", "LbtError", "FixedExamMaker", "FunctionalExamMaker", "MetaInfoExamMaker",
           "resolve_teaching_plans", "LbTScore", "lbt_scores", "lm", "Pair", "M1", "run_m1", "ModelPool", "MathScorer", "answers_equivalent",
           "extract_math_answer", "m1_max", "m1_sum", "self_consistency", "SolveProblem", "Student",
           "Teacher"]
