"""M3 configuration: `LbTOptimizerConfig` (the optimizer's hyperparameters, declared once) and `M3Config` (an `lbt m3` run:
those plus models, task and baselines), dataclasses whose fields carry their help text, checked in
``__post_init__``, loaded from YAML.

Defaults are the paper's (the LbT patch of ProTeGi: docs/method.md, "M3"); model entries use the
same ``model_type`` / ``model_cfg`` convention as `lbt m1`.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from ..config import EMBEDDED, dataclass_from_dict, load_yaml
from ..config import help_field as _help
from ..registry import did_you_mean
from ..renamed import renamed

BASELINES = ("zero_shot", "random", "self")
DATASETS = ("liar", "fallacy", "jsonl")
log = logging.getLogger("lbt_dspy")


def _earlier_keys(raw, source: str):
    """An `lbt m3` config written with the earlier keys (``task: liar``, ``task_cfg``) read as ``dataset_type`` /
    ``dataset_cfg``, with a one-line notice each (docs/names.md)."""
    if not isinstance(raw, dict):
        return raw
    raw = dict(raw)
    if raw.get("task") in DATASETS and "dataset_type" not in raw:
        log.warning("%s: key 'task: %s' is now 'dataset_type: %s' (read as it; docs/names.md)", source, raw["task"],
                    raw["task"])
        raw["dataset_type"] = raw.pop("task")
    if "task_cfg" in raw and "dataset_cfg" not in raw:
        log.warning("%s: key 'task_cfg' is now 'dataset_cfg' (read as it; docs/names.md)", source)
        raw["dataset_cfg"] = raw.pop("task_cfg")
    return raw


def _choice(key: str, val, allowed) -> None:
    if val not in allowed:
        raise ValueError(f"{key} must be one of {', '.join(allowed)}, got {val!r}{did_you_mean(str(val), allowed)}")


@dataclass
class LbTOptimizerConfig:
    """The hyperparameters of `LbTOptimizer`, declared once: the optimizer takes them as keyword arguments
    (or ``config=``), `M3Config` inherits them for YAML. Checked in ``__post_init__``.

    Defaults are the paper's (the patch's flags): K = 8, 5 rounds, beam 4, minibatch 64, 4 reflections per set
    with at most 4 failure cases each, one reason per reflection, at most 8 new sets per set, scoring by the
    teacher on ``eval_budget / #candidates`` training examples.

    Example:
        >>> LbTOptimizerConfig(rounds=2).beam_size
        4
        >>> LbTOptimizerConfig(scorer="oracle")
        Traceback (most recent call last):
        ...
        ValueError: scorer must be one of teacher, students, got 'oracle'
    """

    num_examples: int = _help("K, in-context examples per set.", default=8)
    init_method: str = _help("gen (the teacher writes the first set) or train (K training examples: K/2 Yes + K/2 "
                             "No for Yes/No tasks, labels taken in turn for others).", default="gen")
    rounds: int = _help("Expansion rounds after round 0.", default=5)
    beam_size: int = _help("Example sets kept per round.", default=4)
    minibatch_size: int = _help("Training examples each student is examined on per round.", default=64)
    reflections_per_set: int = _help("Teacher reflections per set (the patch's n_gradients).", default=4)
    failures_per_reflection: int = _help("Failure cases shown per reflection (errors_per_gradient).", default=4)
    reasons_per_reflection: int = _help("Reasons per reflection, one rewrite each (gradients_per_error).", default=1)
    expansion_factor: int = _help("At most this many new sets per set (max_expansion_factor).", default=8)
    dedupe: bool = _help("Drop new sets identical to one already in the beam or the round.", default=True)
    scorer: str = _help("Who scores candidates on a train sample: teacher (the paper) or students.", default="teacher")
    score_sample_size: int = _help("Train examples per candidate when scoring (null: eval_budget / #candidates).",
                                   default=None)
    eval_budget: int = _help("The patch's scoring budget (32 x 8 x 8 = 2048).", default=2048)
    score_metric: str = _help("Candidate score: metric (mean of the optimizer's metric; the default metric, exact "
                              "match, makes it the patch's 01 scorer), accuracy (exact match), or f1 (binary F1 of "
                              "Yes for Yes/No tasks, macro F1 over the labels otherwise).", default="metric")
    reason_max_new_tokens: int = _help("Token cap of one reflection (null: the teacher LM's; the patch: 1024).",
                                       default=None)
    init_attempts: int = _help("Tries of the gen init before falling back to train init.", default=3)
    question: str = _help("The task question the teacher and classifier see (null: the program's instructions, "
                          "or one made from its fields when they are DSPy's boilerplate; `lbt m3`: the task's).",
                          default=None)
    output_field: str = _help("The output field the examples label (null: the program's first output the "
                              "trainset has).", default=None)
    labels: list = _help("The label set (null: read from the trainset: 0/1 or Yes/No -> Yes/No, a few repeated "
                         "values -> those, otherwise free text).", default=None)
    seed: int = _help("Seed of all sampling.", default=0)

    def __post_init__(self):
        _choice("init_method", self.init_method, ("gen", "train"))
        _choice("scorer", self.scorer, ("teacher", "students"))
        _choice("score_metric", self.score_metric, ("metric", "accuracy", "f1"))
        for key in ("num_examples", "beam_size", "minibatch_size", "failures_per_reflection", "reasons_per_reflection",
                    "expansion_factor", "eval_budget", "init_attempts"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {getattr(self, key)!r}")
        for key in ("rounds", "reflections_per_set"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 0:
                raise ValueError(f"{key} must be an integer >= 0, got {getattr(self, key)!r}")
        for key in ("score_sample_size", "reason_max_new_tokens"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or null)")
        if self.labels is not None and (not isinstance(self.labels, (list, tuple)) or not self.labels):
            raise ValueError(f"labels must be a non-empty list (or null), got {self.labels!r}")

    def optimizer_kwargs(self) -> dict:
        """This config's `LbTOptimizerConfig` fields (a subclass's own fields left out)."""
        return {f.name: getattr(self, f.name) for f in fields(LbTOptimizerConfig)}


@dataclass
class M3Config(LbTOptimizerConfig):
    """Everything an `lbt m3` run needs: the optimizer's hyperparameters (inherited from `LbTOptimizerConfig`) plus
    models, task, baselines and execution. Build with `M3Config.from_yaml(path)`.

    Example:
        >>> cfg = M3Config.from_dict({"rounds": 2, "dataset_type": "liar"})
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
    teacher_prefill: bool = _help("Start the teacher's answers with '<START>\\nText:' / '<START>' (steers small "
                                  "models; ignored by plain chat endpoints). Not in the paper.", default=False)
    # --- task ---
    task: str = _help("What the problems are (`lbt_dspy.tasks`): classification, the task `lbt m3` runs.",
                      default="classification")
    dataset_type: str = _help("Where the examples come from: liar, fallacy (data/<name>) or jsonl "
                              "(dataset_cfg.train_file / test_file). Earlier name: task.", default="liar")
    dataset_cfg: dict = _help("data_dir, or train_file + test_file, of {label, text} JSONL rows. Earlier name: "
                              "task_cfg.", default_factory=dict)
    train_size: int = _help("Random subset of the training set used as the pool (null: all of it).", default=None)
    test_size: int = _help("Random subset of the test set for F1 (null: all of it).", default=None)
    # --- evaluation and baselines ---
    eval_students: bool = _help("Also report each student's test F1 per round (the paper: the teacher's only).",
                                default=False)
    baselines: list = _help("Baselines in the report: zero_shot, random (K random train examples), self (the "
                            "teacher as its own only student, APO-style).",
                            default_factory=lambda: list(BASELINES))
    random_draws: int = _help("Random example sets drawn for the random baseline (F1 averaged).", default=1)
    # --- execution ---
    concurrency: int = _help("LM calls in flight at once (the optimizer's num_threads).", default=16)
    num_retries: int = _help("Retries of a failed LM call.", default=5)
    cache: bool = _help("Use DSPy's response cache (repeated prompts are free).", default=True)
    description: str = _help("Free text, shown in the report.", default="")

    def __post_init__(self):
        super().__post_init__()
        _choice("task", self.task, ("classification",))
        _choice("dataset_type", self.dataset_type, DATASETS)
        for b in self.baselines:
            if b not in BASELINES:
                raise ValueError(f"baselines: unknown baseline {b!r}{did_you_mean(b, BASELINES)}; "
                                 f"known: {', '.join(BASELINES)}")
        for key in ("random_draws", "concurrency"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1")
        if self.num_retries < 0:
            raise ValueError("num_retries must be >= 0")
        for key in ("train_size", "test_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1 (or null)")
        if not self.student_model_cfgs:
            raise ValueError("student_model_cfgs is empty")
        for key in self.dataset_cfg:
            if key not in ("data_dir", "train_file", "test_file"):
                raise ValueError(f"dataset_cfg.{key}: unknown key"
                                 f"{did_you_mean(key, ['data_dir', 'train_file', 'test_file'])}")

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "M3Config":
        return dataclass_from_dict(cls, _earlier_keys(raw, source), source)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "M3Config":
        return cls.from_dict(load_yaml(path), str(path))

    def to_dict(self) -> dict:
        return copy.deepcopy(asdict(self))


__getattr__ = renamed(__name__, {"LbTConfig": ("LbTOptimizerConfig", lambda: LbTOptimizerConfig)})  # the earlier name
