"""M3: learning by teaching for in-context examples (the paper's ProTeGi/APO patch) as a DSPy teleprompter.

`LbTOptimizer` optimises the K demos of any DSPy program (any fields, any labels, free text scored by a metric;
the paper's Yes/No `make_classifier` is one case): students' failures with the current examples drive the
teacher's reflections and rewrites; beam search keeps the best sets. `lbt m3 CFG` (`run.run_m3`) runs it on a
task with baselines and writes report.md.

M3 is built on the parts M1 uses, where the concept is the same: its students (and the teacher when it
classifies) are `lbt_dspy.Student`s running the program being tuned, whose answer is the label; an example set's
exam, its score and its test F1 are `lbt_dspy.LbTScore`s (a `FixedExamMaker` over the examples, scored by
`lbt_dspy.scoring.ClassificationScorer`), whose per-student records are "which student failed on which training
example"; every LM call goes through the record layer (`lbt_dspy.runner.record_scope` / `recorded`, a
`RunStore`), so a run resumes as `lbt m1` does; calls run in the run's `CallPool` and are counted by one
`CallCounter`.

What stays M3's own: the beam search and its round records (`optimizer`: candidates, reflections, rewrites,
expansion, dedupe, seeded per round); the teacher's three prompts and their adapter (`signatures`,
`adapters.TeacherAdapter`); the classifier's prompts (`adapters.ClassifierAdapter`, `TurnsAdapter`); what it
reads from a program and a trainset (`fields.TaskFields`: inputs, output, labels) and the text formats of
examples and failure cases (`formats`); set-level metrics (`metrics`: binary and macro F1); the liar / fallacy /
JSONL tasks (`tasks`); its configs (`config`), report (`report`) and `WithAdapter` (`tuned`).
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
