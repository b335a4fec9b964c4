"""M3: learning by teaching for in-context examples (the paper's ProTeGi/APO patch) as a DSPy teleprompter.

`LbTOptimizer` optimises the K demos of any DSPy program (any fields, any labels, free text scored by a metric;
the paper's Yes/No `make_classifier` is one case): students' failures with the current examples drive the
teacher's reflections and rewrites; beam search keeps the best sets.
`lbt m3 CFG` (`run.run_m3`) runs it on a task with baselines and writes report.md.
"""

from .adapters import ClassifierAdapter, TeacherAdapter, TurnsAdapter
from .config import LbTOptimizerConfig
from .fields import TaskFields
from .metrics import accuracy, binary_f1, exact_match, macro_f1, token_f1
from .optimizer import Candidate, LbTOptimizer
from .tuned import WithAdapter
from ..student import with_demos
from .signatures import Classify, GenerateExamples, ReflectOnFailures, RewriteExamples, make_classifier
from .tasks import BinaryTask, load_task

__all__ = ["ClassifierAdapter", "TeacherAdapter", "TurnsAdapter", "with_demos", "accuracy", "binary_f1", "Candidate",
           "LbTOptimizerConfig", "TaskFields", "exact_match", "macro_f1", "token_f1", "WithAdapter", "LbTOptimizer", "Classify", "GenerateExamples", "ReflectOnFailures", "RewriteExamples", "make_classifier",
           "BinaryTask", "load_task"]

from ..renamed import renamed  # noqa: E402

__getattr__ = renamed(__name__, {"LbTConfig": ("LbTOptimizerConfig", lambda: LbTOptimizerConfig)})  # the earlier name
