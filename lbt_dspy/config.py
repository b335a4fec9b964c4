"""Run configuration: one dataclass whose fields carry their help text (TRL style), loaded from YAML.

Keys follow the seed (``student_model_cfgs``, ``general_student_sample_cfg``, ``exam_maker_type`` /
``exam_maker_cfg``, ``exam_prompter_*``, ``exam_scorer_*``, ``teaching_plans``) plus what a one-command
M1 run needs (teacher, dataset, number of TR-TA pairs, concurrency).
"""

from __future__ import annotations

import copy
import re
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path

import yaml

from .errors import LbtError
from .renamed import renamed
from .registry import did_you_mean

EMBEDDED = {"model_type": "embedded"}


def help_field(text: str, default=MISSING, default_factory=MISSING):
    """A dataclass field whose help text is in its metadata (TRL style; CLIs and docs read it)."""
    kw = {"metadata": {"help": text}}
    if default_factory is not MISSING:
        return field(default_factory=default_factory, **kw)
    return field(default=default, **kw)


@dataclass
class M1Config:
    """Everything an `lbt exam` / `lbt m1` run needs. Build with `M1Config.from_yaml(path)`.

    Example:
        >>> cfg = M1Config.from_dict({"num_pairs": 4})   # the seed's name, num_rationales, is accepted
        >>> cfg.num_pairs, cfg.exam_maker_type
        (4, 'func')
    """

    # --- models ---
    teacher_model_cfg: dict = help_field("The teacher: model_type + model_cfg (+ sample_cfg).",
                                    default_factory=lambda: dict(EMBEDDED))
    teacher_sample_cfg: dict = help_field("Teacher sampling for TR-TA pairs (the paper: temperature 0.7, top_k 20).",
                                     default_factory=lambda: {"temperature": 0.7, "top_k": 20, "max_new_tokens": 512})
    greedy_sample_cfg: dict = help_field("Overrides of teacher_sample_cfg for the greedy baseline.",
                                    default_factory=lambda: {"do_sample": False})
    student_model_cfgs: list = help_field("The students: a list of model_type + model_cfg (+ sample_cfg) entries.",
                                     default_factory=lambda: [dict(EMBEDDED)])
    general_student_sample_cfg: dict = help_field("Sampling defaults for every student (entries' sample_cfg override).",
                                             default_factory=lambda: {"temperature": 0.7, "top_k": 20,
                                                                      "max_new_tokens": 512})
    # --- task ---
    task: str = help_field("The kind of problem: math or code (lbt_dspy/tasks). It decides the M1 methods (code: M1 "
                           "MAX, never voted), the report's rows and, when left out of the YAML, the dataset, scorer "
                           "and exam maker (code: humaneval, code, similar). Empty: inferred from exam_scorer_type.",
                           default="")
    dataset_type: str = help_field("Where teaching problems and the exam bank come from: arith, math181, jsonl.",
                              default="math181")
    dataset_cfg: dict = help_field("Arguments of the dataset.", default_factory=dict)
    num_pairs: int = help_field("TR-TA pairs the teacher samples per teaching problem (the paper: 256); the seed's "
                                "key num_rationales is accepted for it.", default=8)
    exam_maker_type: str = help_field("How exam problems are chosen: fixed, func, metainfo.", default="func")
    exam_maker_cfg: dict = help_field("Arguments of the exam maker (func: num_exam_questions, num_repetitions; "
                                      "each maker's own defaults apply, func's are 3 and 3).", default_factory=dict)
    exam_prompter_type: str = help_field("The prompt format: basic (the paper's templates).", default="basic")
    exam_prompter_cfg: dict = help_field("instruction, demo_template, exam_template, stub_teaching_items, "
                                    "use_multi_round_conv.", default_factory=dict)
    exam_scorer_type: str = help_field("How exam answers are scored: math.", default="math")
    exam_scorer_cfg: dict = help_field("Arguments of the scorer.", default_factory=dict)
    teaching_plans: object = help_field("`lbt exam` only: 'every', 'no demo', or a list of index lists.", default="every")
    exam_budget: str = help_field("`lbt m1` exam generations: 'full' (every pair takes every exam problem, the paper) "
                             "or 'adaptive' (racing: only pairs that can still change the M1 MAX/SUM pick get more "
                             "exam problems; see lbt_dspy/m1/adaptive.py). Adaptive runs give partial LbT scores.",
                             default="full")
    exam_budget_cfg: dict = help_field("With exam_budget 'adaptive': initial (exam problems every pair of a contested TP "
                                  "takes first, default 1), step (added per round, 1), confidence (1.0: worst-case "
                                  "bounds, always the full exam's pick; lower: fewer generations, default 0.95), "
                                  "prior_strength (2.0), max_width (MAX: pairs per answer group per round, 2), "
                                  "methods (picks to decide, default both M1 MAX and M1 SUM).",
                                  default_factory=dict)
    # --- execution ---
    concurrency: int = help_field("Requests in flight at once.", default=16)
    num_retries: int = help_field("Retries of a failed LM call (backoff, honouring Retry-After).", default=5)
    cache: bool = help_field("Use DSPy's response cache.", default=True)
    # --- report ---
    subsample_sizes: list = help_field("Numbers of TR-TA pairs for the accuracy-vs-pairs curve (default: powers of 2).",
                                  default_factory=list)
    subsample_repeats: int = help_field("Random subsets per size in that curve.", default=20)
    seed: int = help_field("Seed for subsampling and the report's bootstrap intervals.", default=0)
    a6_pairs: int = help_field("Table A6 of the report: M1 with this many TR-TA pairs per problem against SC with "
                               "all of them (the paper: 24 of 256); emitted when the run has more pairs.", default=24)
    a6_subsets: int = help_field("Table A6: random subsets of a6_pairs pairs; mean and std over them (the paper: 10).",
                                 default=10)
    bootstrap_resamples: int = help_field("Resamples of the report's 95% bootstrap intervals over problems.",
                                          default=2000)
    description: str = help_field("Free text, shown in the report.", default="")
    debug: bool = help_field("Seed key, accepted: the seed's scripts/exam.py never read it (its debug re-prompt in "
                             "lbt/test.py was unreachable); lbt warns that it has no effect.", default=False)

    def __post_init__(self):
        # Checked here, not in from_dict: a config built in Python, from YAML or with --set is checked alike.
        if not isinstance(self.num_pairs, int) or self.num_pairs < 1:
            raise LbtError(f"key num_pairs / num_rationales must be >= 1 (an integer), got {self.num_pairs!r}")
        if not isinstance(self.concurrency, int) or self.concurrency < 1:
            raise LbtError(f"key concurrency must be >= 1 (an integer), got {self.concurrency!r}")
        if not self.student_model_cfgs:
            raise LbtError("key student_model_cfgs is empty (give at least one student)")
        if self.exam_budget not in ("full", "adaptive"):
            raise LbtError(f"key exam_budget must be 'full' or 'adaptive', got {self.exam_budget!r}")
        if self.num_retries < 0 or self.subsample_repeats < 1:
            raise LbtError("key num_retries must be >= 0 and subsample_repeats >= 1")
        self._check_sampling()
        for key in ("a6_pairs", "a6_subsets", "bootstrap_resamples"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise LbtError(f"key {key!r} must be an integer >= 1, got {getattr(self, key)!r}")
        if self.task:
            from .tasks import task_for

            task = task_for(self)  # an unknown task: one line with a did-you-mean
            if task.command != "m1":
                raise LbtError(f"key 'task': {task.name} runs are `lbt {task.command}` runs (configs/m3_liar.yaml)")
            task.check(self)
        if self.exam_budget_cfg:
            from .m1.adaptive import exam_scheduler

            try:
                exam_scheduler(self.exam_budget_cfg, num_slots=1)
            except (TypeError, ValueError) as exc:
                raise LbtError(f"exam_budget_cfg: {exc}") from None

    def _check_sampling(self) -> None:
        """Sampling values (temperature >= 0, max_new_tokens >= 1, ...) are checked at load, not by failing calls."""
        from .models.pool import normalize_sample_cfg

        cfgs = [("teacher_sample_cfg", self.teacher_sample_cfg), ("greedy_sample_cfg", self.greedy_sample_cfg),
                ("general_student_sample_cfg", self.general_student_sample_cfg)]
        entries = [("teacher_model_cfg", self.teacher_model_cfg)]
        entries += [(f"student_model_cfgs[{i}]", e) for i, e in enumerate(self.student_model_cfgs or [])]
        cfgs += [(f"{name}.sample_cfg", e.get("sample_cfg")) for name, e in entries if isinstance(e, dict)]
        for name, cfg in cfgs:
            if cfg is not None:
                normalize_sample_cfg(cfg, name)

    @property
    def num_rationales(self) -> int:  # the seed's name of num_pairs
        return self.num_pairs

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "M1Config":
        if isinstance(raw, dict) and raw.get("task"):  # the task's loader, scorer and exam maker by default
            from .tasks import tasks

            try:
                raw = {**tasks.get(raw["task"]).defaults, **raw}
            except LbtError as exc:
                raise LbtError(f"{source}: {exc}") from None
        return dataclass_from_dict(cls, resolve_aliases(raw, source), source, also_known=CONFIG_ALIASES)

    @classmethod
    def from_yaml(cls, path: str | Path, sets: list[str] | dict | None = None) -> "M1Config":
        """The config in YAML file `path`, with ``--set KEY=VALUE`` overrides (dotted keys reach nested ones)."""
        return cls.from_dict(apply_sets(load_yaml(path), sets), str(path))

    def to_dict(self) -> dict:
        out = copy.deepcopy(asdict(self))
        # Keys added after runs were saved are left out while at their default, so those runs still resume.
        for key, default in _OMIT_WHEN_DEFAULT.items():
            if out.get(key) == default:
                del out[key]
        return out


# The seed's names of renamed keys -> lbt's (a config, or a run's saved config.yaml, may use either).
CONFIG_ALIASES = {"num_rationales": "num_pairs"}


def resolve_aliases(raw, source: str = "config"):
    """`raw` with the seed's key names (`CONFIG_ALIASES`) under lbt's; both given is an `LbtError`."""
    if not isinstance(raw, dict) or not any(k in raw for k in CONFIG_ALIASES):
        return raw
    out = dict(raw)
    for old, new in CONFIG_ALIASES.items():
        if old in out:
            if new in out:
                raise LbtError(f"{source}: keys {old!r} and {new!r} are the same setting; give one")
            out[new] = out.pop(old)
    return out


_OMIT_WHEN_DEFAULT = {"task": "", "exam_budget": "full", "exam_budget_cfg": {}, "debug": False,
                      "a6_pairs": 24, "a6_subsets": 10, "bootstrap_resamples": 2000}


_TYPES = {"dict": dict, "list": list, "int": int, "float": (int, float), "str": str, "bool": bool,
          "None": type(None), "NoneType": type(None)}


def _accepts(annotation, value) -> bool:
    """Whether `value` fits a field's plain annotation (str, int, ``bool | None``, ``list[str]``...; given as a
    type or, under ``from __future__ import annotations``, as a string); annotations it cannot read accept all."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)
    if not isinstance(annotation, str) and type(annotation).__name__ in ("UnionType", "_UnionGenericAlias"):
        text = " | ".join(getattr(a, "__name__", str(a)) for a in annotation.__args__)
    kinds = []
    for part in (p.strip() for p in text.replace("typing.", "").split("|")):
        kind = _TYPES.get(part.split("[", 1)[0])
        if kind is None:
            return True  # a Literal, an enum, Any...: left to the class's own checks
        kinds.append(kind)
    for kind in kinds:
        allowed = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, allowed) and not (isinstance(value, bool) and bool not in allowed):
            return True
    return False


def dataclass_from_dict(cls, raw: dict, source: str = "config", also_known=()):
    """Build config dataclass `cls` from a mapping: unknown keys (with a did-you-mean; `also_known` are keys
    another class takes) and wrong types of plain fields raise a one-line `LbtError` naming `source` and the
    key; None means "the default". The class checks its values in ``__post_init__``; what it raises there
    comes out as one line prefixed by `source`."""
    if not isinstance(raw, dict):
        raise LbtError(f"{source}: expected a mapping at the top level")
    known = {f.name: f for f in fields(cls) if f.init}
    for key, val in raw.items():
        if key not in known:
            raise LbtError(f"{source}: unknown key {key!r}{did_you_mean(key, [*known, *also_known])}")
        if val is not None and not _accepts(known[key].type, val):
            raise LbtError(f"{source}: key {key!r} expects {_type_name(known[key].type)}, got "
                           f"{type(val).__name__} ({val!r:.60})")
    try:
        return cls(**{k: v for k, v in raw.items() if v is not None})
    except (LbtError, ValueError, TypeError) as exc:
        raise LbtError(f"{source}: {' '.join(str(exc).split())}") from None


def _type_name(annotation) -> str:
    return annotation if isinstance(annotation, str) else getattr(annotation, "__name__", None) or str(annotation)


def parse_sets(items: list[str] | None, flag: str = "--set") -> dict:
    """``KEY=VALUE`` strings as a mapping, each value read as YAML (``lr=1e-5``, ``dataset_cfg={seed: 1}``,
    ``dataset_cfg.seed=1``: a dotted key names a key inside a mapping).

    Example:
        >>> parse_sets(["num_rationales=4", "dataset_cfg.num_families=2"])
        {'num_rationales': 4, 'dataset_cfg.num_families': 2}
    """
    out = {}
    for item in items or []:
        key, sep, val = item.partition("=")
        if not sep or not key.strip() or any(not part for part in key.strip().split(".")):
            raise LbtError(f"{flag} {item!r}: expected KEY=VALUE (KEY may be dotted: dataset_cfg.seed=1)")
        try:
            out[key.strip()] = yaml.safe_load(val)
        except yaml.YAMLError as exc:
            raise LbtError(f"{flag} {item!r}: the value is not valid YAML ({' '.join(str(exc).split())})") from None
    return out


def apply_sets(raw: dict, sets: list[str] | dict | None) -> dict:
    """A copy of config mapping `raw` with ``--set`` overrides applied (a list of KEY=VALUE strings, or their
    `parse_sets` mapping); ``a.b=v`` sets key ``b`` of mapping ``a``, making it when absent.

    Example:
        >>> apply_sets({"dataset_cfg": {"seed": 0, "limit": 5}}, ["dataset_cfg.seed=1"])
        {'dataset_cfg': {'seed': 1, 'limit': 5}}
    """
    out = copy.deepcopy(raw)
    for dotted, val in (sets if isinstance(sets, dict) else parse_sets(sets)).items():
        *parents, last = dotted.split(".")
        node = out
        for i, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise LbtError(f"--set {dotted}=...: {'.'.join(parents[:i + 1])} is not a mapping")
        node[last] = val
    return out


def load_yaml(path: str | Path) -> dict:
    """A YAML file as a mapping; a missing file or a syntax error is an `LbtError` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise LbtError(f"{path}: no such config file")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise LbtError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise LbtError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    if not isinstance(raw, dict):
        raise LbtError(f"{path}: expected a mapping at the top level")
    return raw


_SECRET = re.compile(r"(api_?key|secret|token|password)", re.I)


def redact(obj):
    """A copy of a config with secret-looking values replaced by '***' (keys named *_env are kept)."""
    if isinstance(obj, dict):
        return {k: ("***" if _SECRET.search(str(k)) and not str(k).endswith("_env") and isinstance(v, str) else redact(v))
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


__getattr__ = renamed(__name__, {"LbtConfig": ("M1Config", lambda: M1Config)})  # the earlier name
