"""`lbt m3` configuration: one dataclass whose fields carry their help text, loaded from YAML.

Defaults are the paper's (the LbT patch of ProTeGi, section 2 of docs/lbt-method.md); model entries use the
same ``model_type`` / ``model_cfg`` convention as `lbt m1`.
"""

from __future__ import annotations

import copy
from dataclasses import asdict, dataclass
from pathlib import Path

from ..config import EMBEDDED, dataclass_from_dict, load_yaml
from ..config import help_field as _help
from ..errors import LbtError
from ..registry import did_you_mean

BASELINES = ("zero_shot", "random", "self")


@dataclass
class M3Config:
    """Everything an `lbt m3` run needs. Build with `M3Config.from_yaml(path)`.

    Example:
        >>> cfg = M3Config.from_dict({"rounds": 2, "task": "liar"})
        >>> cfg.num_examples, cfg.beam_size, cfg.init_method
        (8, 4, 'gen')
    """

    # --- models ---
    teacher_model_cfg: dict = _help("The teacher: model_type + model_cfg (as in `lbt m1`).",
                                    default_factory=lambda: dict(EMBEDDED))
    teacher_sample_cfg: dict = _help("Teacher sampling when it writes examples and reasons (the patch: temperature "
                                     "0.7, max 1024 tokens).",
                                     default_factory=lambda: {"temperature": 0.7, "max_new_tokens": 1024})
    classify_sample_cfg: dict = _help("Sampling of every Yes/No classification, by the teacher and the students "
                                      "(the patch: temperature 0, 4 tokens).",
                                      default_factory=lambda: {"do_sample": False, "max_new_tokens": 4})
    student_model_cfgs: list = _help("The students that take the exams: model_type + model_cfg entries (an entry's "
                                     "sample_cfg overrides classify_sample_cfg).",
                                     default_factory=lambda: [dict(EMBEDDED)])
    reason_max_new_tokens: int = _help("Token cap of one reflection (null: teacher_sample_cfg's; the patch: "
                                       "1024).", default=None)
    teacher_prefill: bool = _help("Start the teacher's answers with '<START>\\nText:' / '<START>' (steers small "
                                  "models; ignored by plain chat endpoints). Not in the paper.", default=False)
    # --- task ---
    task: str = _help("liar, fallacy (data/<task>) or jsonl (task_cfg.train_file / test_file).", default="liar")
    task_cfg: dict = _help("data_dir, or train_file + test_file, of {label, text} JSONL rows.", default_factory=dict)
    question: str = _help("The classifier's question (default: the task's).", default=None)
    train_size: int = _help("Random subset of the training set used as the pool (null: all of it).", default=None)
    test_size: int = _help("Random subset of the test set for F1 (null: all of it).", default=None)
    # --- the optimizer (LbTOptimizer) ---
    num_examples: int = _help("K, in-context examples per set.", default=8)
    init_method: str = _help("gen (the teacher writes the first set) or train (K/2 positive + K/2 negative "
                             "training examples).", default="gen")
    rounds: int = _help("Expansion rounds after round 0.", default=5)
    beam_size: int = _help("Example sets kept per round.", default=4)
    minibatch_size: int = _help("Training texts each student is examined on per round.", default=64)
    reflections_per_set: int = _help("Teacher reflections per set (the patch's n_gradients).", default=4)
    failures_per_reflection: int = _help("Failure cases shown per reflection (errors_per_gradient).", default=4)
    reasons_per_reflection: int = _help("Reasons per reflection, one rewrite each (gradients_per_error).", default=1)
    expansion_factor: int = _help("At most this many new sets per set (max_expansion_factor).", default=8)
    dedupe: bool = _help("Drop new sets identical to one already in the beam or the round.", default=True)
    scorer: str = _help("Who scores candidates on a train sample: teacher (the paper) or students.", default="teacher")
    score_sample_size: int = _help("Train texts per candidate when scoring (null: eval_budget / #candidates).",
                                   default=None)
    eval_budget: int = _help("The patch's scoring budget (32 x 8 x 8 = 2048).", default=2048)
    score_metric: str = _help("Candidate score: accuracy (the patch's 01 scorer) or f1.", default="accuracy")
    # --- evaluation and baselines ---
    eval_students: bool = _help("Also report each student's test F1 per round (the paper: the teacher's only).",
                                default=False)
    baselines: list = _help("Baselines in the report: zero_shot, random (K random train examples), self (the "
                            "teacher as its own only student, APO-style).",
                            default_factory=lambda: list(BASELINES))
    random_draws: int = _help("Random example sets drawn for the random baseline (F1 averaged).", default=1)
    seed: int = _help("Seed of all sampling.", default=0)
    # --- execution ---
    concurrency: int = _help("LM calls in flight at once.", default=16)
    num_retries: int = _help("Retries of a failed LM call.", default=5)
    cache: bool = _help("Use DSPy's response cache (repeated prompts are free).", default=True)
    description: str = _help("Free text, shown in the report.", default="")

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "M3Config":
        cfg = dataclass_from_dict(cls, raw, source)
        cfg.check(source)
        return cfg

    def check(self, source: str = "config") -> None:
        choices = {"init_method": ("gen", "train"), "scorer": ("teacher", "students"),
                   "score_metric": ("accuracy", "f1"), "task": ("liar", "fallacy", "jsonl")}
        for key, allowed in choices.items():
            val = getattr(self, key)
            if val not in allowed:
                raise LbtError(f"{source}: {key} must be one of {', '.join(allowed)}, got {val!r}"
                               f"{did_you_mean(val, allowed)}")
        for b in self.baselines:
            if b not in BASELINES:
                raise LbtError(f"{source}: baselines: unknown baseline {b!r}{did_you_mean(b, BASELINES)}; "
                               f"known: {', '.join(BASELINES)}")
        for key in ("num_examples", "beam_size", "minibatch_size", "failures_per_reflection", "reasons_per_reflection",
                    "expansion_factor", "eval_budget", "random_draws", "concurrency"):
            if getattr(self, key) < 1:
                raise LbtError(f"{source}: {key} must be >= 1")
        for key in ("rounds", "reflections_per_set", "num_retries"):
            if getattr(self, key) < 0:
                raise LbtError(f"{source}: {key} must be >= 0")
        for key in ("train_size", "test_size", "score_sample_size", "reason_max_new_tokens"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise LbtError(f"{source}: {key} must be >= 1 (or null)")
        if not self.student_model_cfgs:
            raise LbtError(f"{source}: student_model_cfgs is empty")
        for key in self.task_cfg:
            if key not in ("data_dir", "train_file", "test_file"):
                raise LbtError(f"{source}: task_cfg.{key}: unknown key"
                               f"{did_you_mean(key, ['data_dir', 'train_file', 'test_file'])}")

    @classmethod
    def from_yaml(cls, path: str | Path) -> "M3Config":
        return cls.from_dict(load_yaml(path), str(path))

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))
