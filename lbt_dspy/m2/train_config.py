"""`lbt m2 train`'s configuration: TRL's own `DPOConfig` and `ModelConfig`, plus only what LbT adds.

One YAML file holds both: keys of `trl.ModelConfig` (``model_name_or_path``, ``dtype``, ``use_peft``,
``lora_*``...) go to `M2ModelConfig`, every other key to `M2TrainConfig` (any `trl.DPOConfig` /
`transformers.TrainingArguments` field, plus the LbT fields below). It is read by lbt's one config
loader (`lbt_dspy.config`), not `trl.TrlParser`: TrlParser takes the file as ``--config FILE`` and sets
the YAML values as argparse defaults, so a YAML value of the wrong type is never checked (argparse types
apply only to strings), a bad key or value ends in argparse's usage text and SystemExit instead of one
line naming the file and key, and there are no ``--set a.b=v`` overrides, which every other `lbt`
command takes.

The paper's recipe (``configs/m2_paper_train.yaml``): beta 0.1, lr 5e-7, batch 16, 1 epoch, plus an
NLL term on the chosen answer weighted 50 (iterative RPO). ``loss_type`` / ``loss_weights`` are TRL's
DPO terms alone (what evaluation reports); ``nll_weight: w`` is M2's own term, which
`LbTDPOTrainer.compute_loss` adds while training: the number TRL's ``"sft"`` loss type with weight ``w``
would add (TRL 1.16 has no ``rpo_alpha``), so the training objective is ``loss_terms()``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from trl import DPOConfig, ModelConfig

from ..config import apply_sets, dataclass_from_dict, help_field, load_yaml
from ..errors import LbtError

DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass
class M2TrainConfig(DPOConfig):
    """`trl.DPOConfig` plus what LbT's M2 needs; ``output_dir`` gets adapter/, merged/, checkpoint-N/ and
    train_summary.json.

    Args:
        pairs: A `lbt m2 pairs` output (or its dataset/, or a JSONL of prompt/chosen/rejected records).
        nll_weight: Weight of the NLL term on the chosen answers (the paper: 50; 0: none).
        max_pairs, merged_dtype, save_merged, eval_on_train, eval_max_pairs: see each field's help.
        bf16: As in TRL, but unset means "where the GPU has it" (TRL's own default fails on a CPU).
        Every other `trl.DPOConfig` field as in TRL.

    Example:
        >>> cfg = M2TrainConfig(output_dir="/tmp/m2", pairs="runs/pairs", use_cpu=True)  # doctest: +SKIP
        >>> cfg.loss_type, cfg.loss_weights, cfg.loss_terms()  # doctest: +SKIP
        (['sigmoid'], [1.0], (['sigmoid', 'sft'], [1.0, 50.0]))
    """

    pairs: str = help_field("A `lbt m2 pairs` output directory (or its dataset/, or a JSONL file of prompt/chosen/"
                            "rejected records).", "")
    max_pairs: int = help_field("Use only the first N pairs (0: all); for smoke runs.", 0)
    nll_weight: float = help_field("Weight of the NLL term on the chosen answers, added to the loss_type terms while "
                                   "training (TRL's loss type 'sft'; the paper: 50); 0 turns it off.", 50.0)
    merged_dtype: str = help_field("dtype of merged/ with LoRA (the merge itself runs in float32; full fine-tuning "
                                   "saves the trained weights as they are): auto (the base checkpoint's dtype), "
                                   "float32, bfloat16, float16. Tiny updates (lr 5e-7) can round away in 16-bit "
                                   "weights.", "auto")
    save_merged: bool = help_field("Write merged/ (with LoRA: the adapter merged into the base weights), servable by "
                                   "`transformers serve` / `vllm serve`.", True)
    eval_on_train: bool = help_field("Measure the DPO loss (without the NLL term) and reward accuracy on the training "
                                     "pairs before and after training (forward passes only).", True)
    eval_max_pairs: int = help_field("Pairs used by eval_on_train at most (0: all).", 64)
    bf16: bool | None = help_field("bf16 mixed precision. Unset: on where the GPU supports it, else fp16 on a GPU, "
                                   "fp32 on a CPU or MPS (TRL's own default, always bf16, fails on a CPU).", None)

    def __post_init__(self):
        if not self.output_dir:
            raise LbtError("key 'output_dir' is missing (where adapter/ and merged/ go)")
        if not self.pairs:
            raise LbtError("key 'pairs' is missing (a `lbt m2 pairs` output directory)")
        if self.merged_dtype not in DTYPES:
            raise LbtError(f"key 'merged_dtype' must be one of {', '.join(DTYPES)}, got {self.merged_dtype!r}")
        for key in ("nll_weight", "max_pairs", "eval_max_pairs"):
            if getattr(self, key) < 0:
                raise LbtError(f"key {key!r} must be >= 0, got {getattr(self, key)!r}")
        for key in ("beta", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) <= 0:
                raise LbtError(f"key {key!r} must be > 0, got {getattr(self, key)!r}")
        if self.max_length is not None and self.max_length <= 0:
            raise LbtError(f"key 'max_length' must be > 0, got {self.max_length!r}")
        self._check_loss_terms()
        if self.bf16 is None and not self.fp16:
            self.bf16, self.fp16 = _auto_precision(self.use_cpu)
        try:
            super().__post_init__()
        except ValueError as exc:  # TrainingArguments' own checks: one line
            raise LbtError(" ".join(str(exc).split())) from None

    def _check_loss_terms(self) -> None:
        """``loss_type`` / ``loss_weights``: TRL's DPO terms, one weight each; the NLL term is ``nll_weight``."""
        types = [self.loss_type] if isinstance(self.loss_type, str) else list(self.loss_type)
        weights = [float(w) for w in self.loss_weights] if self.loss_weights else [1.0] * len(types)
        if len(weights) != len(types):
            raise LbtError(f"key 'loss_weights' needs one weight per loss_type ({len(types)}), got {len(weights)}")
        if "sft" in types:
            raise LbtError("key 'loss_type': the NLL term is set by nll_weight; leave 'sft' out of loss_type")
        if self.use_weighting and self.nll_weight > 0:
            # TRL would weight its own "sft" term per pair; M2's term is added outside TRL's terms, unweighted.
            raise LbtError("key 'use_weighting': WPO weights TRL's loss terms, not the NLL term; set nll_weight: 0 "
                           "or leave use_weighting off")
        self.loss_type, self.loss_weights = types, weights

    def loss_terms(self) -> tuple[list[str], list[float]]:
        """The training objective: TRL's terms (``loss_type``, what evaluation reports) plus the NLL term, named
        ``"sft"`` as in TRL, with weight ``nll_weight`` (left out at 0)."""
        if self.nll_weight > 0:
            return [*self.loss_type, "sft"], [*self.loss_weights, float(self.nll_weight)]
        return list(self.loss_type), list(self.loss_weights)


@dataclass
class M2ModelConfig(ModelConfig):
    """`trl.ModelConfig` (the model and its LoRA, turned into a `peft.LoraConfig` by `trl.get_peft_config`),
    with the embedded SmolLM2 checkpoint as the default model and its values checked.

    Example:
        >>> M2ModelConfig(lora_r=8).model_name_or_path
        'embedded'
    """

    model_name_or_path: str | None = help_field("The model to tune: a local checkpoint directory, a Hub id, or "
                                                "'embedded' (lbt's SmolLM2-135M-Instruct checkpoint).", "embedded")
    lora_target_modules: str | list[str] | None = help_field("Modules LoRA adapts: 'all-linear', a list of module "
                                                             "names, or unset (PEFT's default for the model).", None)

    def __post_init__(self):
        if self.dtype not in DTYPES:
            raise LbtError(f"key 'dtype' must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for key in ("lora_r", "lora_alpha"):
            if getattr(self, key) <= 0:
                raise LbtError(f"key {key!r} must be > 0, got {getattr(self, key)!r}")
        if not 0 <= self.lora_dropout < 1:
            raise LbtError(f"key 'lora_dropout' must be in [0, 1), got {self.lora_dropout!r}")
        try:
            super().__post_init__()
        except ValueError as exc:
            raise LbtError(" ".join(str(exc).split())) from None


_MODEL_KEYS = {f.name for f in fields(M2ModelConfig)}
_OLD_KEYS = {"model": "model_name_or_path", "model_dtype": "dtype"}  # keys of configs written before TRL's names


def train_config_from_dict(raw: dict, source: str = "config") -> tuple[M2TrainConfig, M2ModelConfig]:
    """The (training, model) configs of one mapping; unknown keys and bad values: one-line `LbtError`."""
    if not isinstance(raw, dict):
        raise LbtError(f"{source}: expected a mapping at the top level")
    raw = {_OLD_KEYS.get(k, k): v for k, v in raw.items()}
    model_raw = {k: v for k, v in raw.items() if k in _MODEL_KEYS}
    train_raw = {k: v for k, v in raw.items() if k not in _MODEL_KEYS}
    model_args = dataclass_from_dict(M2ModelConfig, model_raw, source)
    return dataclass_from_dict(M2TrainConfig, train_raw, source, also_known=_MODEL_KEYS), model_args


def load_train_config(path: str | Path, sets: list[str] | dict | None = None) -> tuple[M2TrainConfig, M2ModelConfig]:
    """The configs in YAML file `path` with ``--set KEY=VALUE`` overrides."""
    return train_config_from_dict(apply_sets(load_yaml(path), sets), str(path))


def _auto_precision(use_cpu: bool) -> tuple[bool, bool]:
    """(bf16, fp16) for an unset precision: bf16 on GPUs that have it, fp16 on other GPUs, fp32 elsewhere."""
    import torch

    if use_cpu or not torch.cuda.is_available():
        return False, False
    return (True, False) if torch.cuda.is_bf16_supported() else (False, True)
