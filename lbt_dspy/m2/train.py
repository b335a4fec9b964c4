"""`lbt m2 train`: DPO of the teacher on M2 preference pairs (TRL `DPOTrainer`, optional PEFT LoRA).

The paper's recipe: beta 0.1, lr 5e-7, batch 16, 1 epoch, plus an NLL term on the chosen answer
weighted 50 (iterative RPO, Pang et al.). TRL 1.16 has no ``rpo_alpha`` any more; its NLL term is the
``"sft"`` loss type, combined with DPO's ``"sigmoid"`` through ``loss_type`` / ``loss_weights``: here
``loss_type: [sigmoid, sft]``, ``loss_weights: [1, nll_weight]`` (the ``sft`` term is the chosen
completions' mean per-token NLL).

Outputs in `output_dir`: ``adapter/`` (the LoRA adapter, with PEFT), ``merged/`` (a plain checkpoint
with tokenizer and a generation_config.json with ``do_sample: true``, loadable by `transformers serve`,
`vllm serve` and ``{"model_type": "embedded", "model_cfg": {"checkpoint": merged}}`` in `lbt m1`),
``train_summary.json`` (time per step, losses, DPO loss on the training pairs before and after),
``train_loss.png`` and
``model_entry.yaml`` (the model entries to paste into a config).

Multi-GPU: ``accelerate launch -m lbt_dspy.cli m2 train CFG`` (no code change; the batch is then
``per_device_train_batch_size x gradient_accumulation_steps x processes``).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path


from ..config import dataclass_from_dict, load_yaml
from ..config import help_field as _help
from ..errors import LbtError
from ..registry import did_you_mean

DEVICES = ("auto", "cpu", "cuda", "mps")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DTYPES = ("auto", "float32", "bfloat16", "float16")




@dataclass
class M2TrainConfig:
    """Everything `lbt m2 train` needs; load with `M2TrainConfig.from_yaml(path)` (unknown keys are errors).

    Example:
        >>> cfg = M2TrainConfig.from_dict({"pairs": "p", "output_dir": "o"})
        >>> cfg.loss_types(), cfg.loss_weights()
        (['sigmoid', 'sft'], [1.0, 50.0])
    """

    # --- data and model ---
    pairs: str = _help("A `lbt m2 pairs` output directory (or its dataset/, or a JSONL file of prompt/chosen/"
                       "rejected records).", "")
    output_dir: str = _help("Where adapter/, merged/ and train_summary.json go.", "")
    model: str = _help("The model to tune: a local checkpoint directory, a Hub id, or 'embedded' (the "
                       "SmolLM2-135M-Instruct checkpoint of lbt_dspy).", "embedded")
    trust_remote_code: bool = _help("Allow model code from the checkpoint (transformers trust_remote_code).", False)
    max_pairs: int = _help("Use only the first N pairs (0: all); for smoke runs.", 0)
    # --- DPO ---
    beta: float = _help("DPO beta: the strength of the pull toward the reference model (the paper: 0.1).", 0.1)
    nll_weight: float = _help("Weight of the NLL term on the chosen answers (TRL loss type 'sft'; the paper: 50); "
                              "0 turns it off.", 50.0)
    learning_rate: float = _help("Peak learning rate (the paper: 5e-7, full fine-tuning; LoRA usually needs more).",
                                 5e-7)
    num_train_epochs: float = _help("Epochs over the pairs (the paper: 1).", 1.0)
    max_steps: int = _help("Optimizer steps; overrides num_train_epochs when > 0.", -1)
    per_device_train_batch_size: int = _help("Pairs per device per forward pass.", 4)
    gradient_accumulation_steps: int = _help("Forward passes per optimizer step (batch = per-device batch x this x "
                                             "devices; the paper: 16).", 4)
    lr_scheduler_type: str = _help("transformers scheduler name (linear, constant, cosine, constant_with_warmup...).",
                                   "linear")
    warmup_steps: float = _help("Warmup: steps (>= 1) or a fraction of all steps (< 1).", 0.0)
    max_length: int = _help("Tokens per prompt + completion at most (longer ones are cut at the end).", 1024)
    gradient_checkpointing: bool = _help("Trade compute for memory (large models).", False)
    seed: int = _help("Seed of shuffling and LoRA initialisation.", 0)
    logging_steps: int = _help("Log the training loss every N steps.", 1)
    save_steps: int = _help("Trainer checkpoints every N steps in output_dir/checkpoints (0: only the final save).",
                            0)
    # --- PEFT ---
    use_peft: bool = _help("Train a LoRA adapter (peft) instead of all weights.", True)
    lora_r: int = _help("LoRA rank.", 16)
    lora_alpha: int = _help("LoRA alpha (scale = alpha / r).", 32)
    lora_dropout: float = _help("LoRA dropout.", 0.0)
    lora_target_modules: object = _help("Modules LoRA adapts: 'all-linear' or a list of module names.", "all-linear")
    # --- device and precision ---
    device: str = _help("auto (cuda > mps > cpu), cpu, cuda or mps. Under `accelerate launch`, leave auto.", "auto")
    precision: str = _help("auto (bf16 on GPUs that have it, else fp16 on GPU; fp32 on cpu/mps), fp32, bf16, fp16.",
                           "auto")
    model_dtype: str = _help("dtype the weights are loaded in: auto (the precision's dtype for LoRA on GPU, else "
                             "float32), float32, bfloat16, float16.", "auto")
    merged_dtype: str = _help("dtype of merged/ with LoRA (the merge itself runs in float32; full fine-tuning saves "
                              "the trained weights as they are): auto (the base checkpoint's "
                              "dtype), float32, bfloat16, float16. Tiny updates (lr 5e-7) can round away in 16-bit "
                              "weights.", "auto")
    # --- outputs ---
    save_merged: bool = _help("Write merged/ (the adapter merged into the base weights).", True)
    eval_on_train: bool = _help("Measure the DPO loss and reward accuracy on the training pairs before and after "
                                "(forward passes only).", True)
    eval_max_pairs: int = _help("Pairs used by eval_on_train at most (0: all).", 64)
    dpo_args: dict = _help("More `trl.DPOConfig` fields, applied last (e.g. {optim: rmsprop}).",
                           default_factory=dict)

    # --- loading ---
    @classmethod
    def from_dict(cls, raw: dict, source: str = "config") -> "M2TrainConfig":
        cfg = dataclass_from_dict(cls, raw, source)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict | None = None) -> "M2TrainConfig":
        return cls.from_dict({**load_yaml(path), **(overrides or {})}, str(path))

    def validate(self, source: str = "config") -> None:
        for key, choices in (("device", DEVICES), ("precision", PRECISIONS), ("model_dtype", DTYPES),
                             ("merged_dtype", DTYPES)):
            if getattr(self, key) not in choices:
                raise LbtError(f"{source}: key {key!r} must be one of {', '.join(choices)}, got {getattr(self, key)!r}")
        if not self.pairs:
            raise LbtError(f"{source}: key 'pairs' is missing (a `lbt m2 pairs` output directory)")
        if not self.output_dir:
            raise LbtError(f"{source}: key 'output_dir' is missing")
        for key in ("beta", "learning_rate", "per_device_train_batch_size", "gradient_accumulation_steps",
                    "max_length", "lora_r"):
            if getattr(self, key) <= 0:
                raise LbtError(f"{source}: key {key!r} must be > 0")
        if self.nll_weight < 0:
            raise LbtError(f"{source}: key 'nll_weight' must be >= 0")
        if not isinstance(self.lora_target_modules, (str, list)):
            raise LbtError(f"{source}: key 'lora_target_modules' expects 'all-linear' or a list of names")
        from trl import DPOConfig

        dpo_fields = {f.name for f in fields(DPOConfig)}
        for key in self.dpo_args:
            if key not in dpo_fields:
                raise LbtError(f"{source}: dpo_args.{key}: not a trl.DPOConfig field{did_you_mean(key, dpo_fields)}")

    def loss_types(self) -> list[str]:
        return ["sigmoid", "sft"] if self.nll_weight > 0 else ["sigmoid"]

    def loss_weights(self) -> list[float]:
        return [1.0, float(self.nll_weight)] if self.nll_weight > 0 else [1.0]


# --- device, precision, model ----------------------------------------------------------------------
def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise LbtError("device: 'cuda' asked for, but torch sees no CUDA GPU")
    if device == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LbtError("device: 'mps' asked for, but torch sees no MPS device")
    return device


def resolve_precision(precision: str, device: str) -> str:
    import torch

    if precision == "auto":
        if device == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    if precision == "fp16" and device == "cpu":
        raise LbtError("precision: fp16 mixed precision needs a GPU; use fp32 or bf16 on cpu")
    return precision


def resolve_model_path(model: str) -> str:
    if model == "embedded":
        from ..models.embedded import checkpoint_path

        return str(checkpoint_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LbtError(f"model: {path} has no config.json (not a transformers checkpoint)")
        return str(path.resolve())
    return model  # a Hub id


def _model_dtype(cfg: M2TrainConfig, precision: str) -> str:
    if cfg.model_dtype != "auto":
        return cfg.model_dtype
    if cfg.use_peft and precision == "bf16":
        return "bfloat16"
    if cfg.use_peft and precision == "fp16":
        return "float16"
    return "float32"


def _step_timer():
    """A TrainerCallback that records the wall time of every optimizer step in ``.times``."""
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times: list[float] = []
            self.cpu_times: list[float] = []  # this process's CPU seconds (all threads): robust to a busy machine
            self._t0 = self._c0 = None

        def on_step_begin(self, args, state, control, **kw):
            self._t0, self._c0 = time.perf_counter(), time.process_time()

        def on_step_end(self, args, state, control, **kw):
            if self._t0 is not None:
                self.times.append(time.perf_counter() - self._t0)
                self.cpu_times.append(time.process_time() - self._c0)
                self._t0 = None

    return StepTimer()


# --- training --------------------------------------------------------------------------------------
def build_trainer(cfg: M2TrainConfig, train_dataset=None):
    """The configured `DPOTrainer` (model loaded, LoRA attached, data tokenized); nothing trained yet."""
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from .pairs import load_pairs

    device = resolve_device(cfg.device)
    precision = resolve_precision(cfg.precision, device)
    model_path = resolve_model_path(cfg.model)
    dataset = train_dataset if train_dataset is not None else load_pairs(cfg.pairs)
    if cfg.max_pairs:
        dataset = dataset.select(range(min(cfg.max_pairs, len(dataset))))
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.trust_remote_code)
    except OSError as exc:
        raise LbtError(f"model: cannot load a tokenizer from {model_path!r} ({exc})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise LbtError(f"model: {model_path} has no chat template; the pairs are chat prompts")
    out = Path(cfg.output_dir)
    model_dtype = _model_dtype(cfg, precision)
    args = {
        "output_dir": str(out / "checkpoints"),
        "beta": cfg.beta, "loss_type": cfg.loss_types(), "loss_weights": cfg.loss_weights(),
        "learning_rate": cfg.learning_rate, "num_train_epochs": cfg.num_train_epochs, "max_steps": cfg.max_steps,
        "per_device_train_batch_size": cfg.per_device_train_batch_size,
        "per_device_eval_batch_size": cfg.per_device_train_batch_size,
        "gradient_accumulation_steps": cfg.gradient_accumulation_steps,
        "lr_scheduler_type": cfg.lr_scheduler_type, "warmup_steps": cfg.warmup_steps,
        "max_length": cfg.max_length, "gradient_checkpointing": cfg.gradient_checkpointing,
        "seed": cfg.seed, "logging_steps": cfg.logging_steps,
        "save_strategy": "steps" if cfg.save_steps > 0 else "no", "save_steps": cfg.save_steps or 500,
        "report_to": "none", "use_cpu": device == "cpu",
        "disable_tqdm": False,  # a step bar even when transformers' logging is quiet (`-q` turns it off)
        "bf16": precision == "bf16", "fp16": precision == "fp16",
        "model_init_kwargs": {"dtype": model_dtype, "trust_remote_code": cfg.trust_remote_code},
        "trust_remote_code": cfg.trust_remote_code,
        "dataloader_pin_memory": device == "cuda",
    }
    if device == "cpu":
        args["optim"] = "adamw_torch"  # the fused default is for GPUs
    args.update(cfg.dpo_args)
    try:
        dpo_args = DPOConfig(**args)
    except (ValueError, TypeError) as exc:
        raise LbtError(f"DPOConfig: {exc}") from None
    peft_config = None
    if cfg.use_peft:
        peft_config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                 target_modules=cfg.lora_target_modules, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model_path, args=dpo_args, train_dataset=dataset, processing_class=tokenizer,
                         peft_config=peft_config)
    trainer.lbt_info = {"device": device, "precision": precision, "model_path": model_path,
                        "model_dtype": model_dtype, "pairs": len(dataset)}
    trainer.lbt_pairs = dataset  # untokenized, for `dpo_metrics`
    return trainer


def dpo_metrics(trainer, dataset) -> dict:
    """The pure DPO loss (no NLL term), reward accuracy and margin of the current model on `dataset`."""
    if not (hasattr(trainer, "loss_types") and hasattr(trainer, "loss_weights")):
        raise LbtError("eval_on_train: this TRL version keeps its loss types elsewhere; set eval_on_train: false "
                       "or use trl>=1.16")
    saved = (trainer.loss_types, trainer.loss_weights)
    trainer.loss_types, trainer.loss_weights = ["sigmoid"], [1.0]  # the DPO term alone, without the NLL term
    try:
        m = trainer.evaluate(eval_dataset=dataset, metric_key_prefix="pairs")
    finally:
        trainer.loss_types, trainer.loss_weights = saved

    def get(name):  # TRL logs its own metrics under eval_*, the Trainer's under the prefix
        return m.get(f"pairs_{name}", m.get(f"eval_{name}"))

    return {"dpo_loss": get("loss"), "reward_accuracy": get("rewards/accuracies"),
            "reward_margin": get("rewards/margins"), "logps_chosen": get("logps/chosen"),
            "logps_rejected": get("logps/rejected")}


def check_train_output(out: Path) -> None:
    """Refuse an output directory that holds a trained model: results are never overwritten."""
    if out.exists() and not out.is_dir():
        raise LbtError(f"{out}: output_dir exists and is not a directory")
    for name in ("train_summary.json", "adapter", "merged"):
        if (out / name).exists():
            raise LbtError(f"{out}: output_dir already holds a trained model ({name}); choose another "
                           "--output-dir or remove it")


def train(cfg: M2TrainConfig, train_dataset=None) -> dict:
    """Train, save ``adapter/`` and ``merged/``, and return (and write) the training summary."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    out = Path(cfg.output_dir)
    check_train_output(out)
    trainer = build_trainer(cfg, train_dataset)
    acc = trainer.accelerator
    info = dict(trainer.lbt_info)
    eval_ds = None
    if cfg.eval_on_train:
        eval_ds = trainer.lbt_pairs
        if cfg.eval_max_pairs and len(eval_ds) > cfg.eval_max_pairs:
            eval_ds = eval_ds.select(range(cfg.eval_max_pairs))
    before = dpo_metrics(trainer, eval_ds) if eval_ds is not None else None
    timer = _step_timer()
    trainer.add_callback(timer)
    t0 = time.perf_counter()
    result = trainer.train()
    train_wall = time.perf_counter() - t0
    after = dpo_metrics(trainer, eval_ds) if eval_ds is not None else None
    acc.wait_for_everyone()
    adapter_dir, merged_dir = out / "adapter", out / "merged"
    merged_info = None
    if cfg.use_peft:
        trainer.save_model(str(adapter_dir))
        if acc.is_main_process:
            trainer.processing_class.save_pretrained(str(adapter_dir))
    if cfg.save_merged:
        if cfg.use_peft:
            if acc.is_main_process:
                merged_info = merge_adapter(info["model_path"], adapter_dir, merged_dir, cfg.merged_dtype,
                                            trust_remote_code=cfg.trust_remote_code)
        else:
            trainer.save_model(str(merged_dir))
            if acc.is_main_process:
                trainer.processing_class.save_pretrained(str(merged_dir))
                write_generation_config(info["model_path"], merged_dir)
                merged_info = {"dtype": "as trained"}
    acc.wait_for_everyone()
    ckpts = out / "checkpoints"
    if acc.is_main_process and ckpts.is_dir() and not any(ckpts.iterdir()):
        ckpts.rmdir()
    steps = trainer.state.global_step
    times = timer.times
    summary = {
        **info,
        "num_processes": acc.num_processes,
        "effective_batch_size": cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * acc.num_processes,
        "loss_type": cfg.loss_types(), "loss_weights": cfg.loss_weights(),
        "steps": steps, "train_wall_s": round(train_wall, 2),
        "s_per_step_mean": round(sum(times) / len(times), 3) if times else None,
        "s_per_step_median": round(sorted(times)[len(times) // 2], 3) if times else None,
        "s_per_step_after_first": round(sum(times[1:]) / len(times[1:]), 3) if len(times) > 1 else None,
        "cpu_s_per_step_mean": round(sum(timer.cpu_times) / len(timer.cpu_times), 3) if timer.cpu_times else None,
        "torch_threads": _torch_threads(),
        "peak_rss_gb": _peak_rss_gb(),
        "train_loss": result.training_loss,
        "loss_history": [{k: v for k, v in h.items() if k in ("step", "loss", "rewards/accuracies",
                                                             "rewards/margins", "learning_rate")}
                         for h in trainer.state.log_history if "loss" in h],
        "pairs_before": before, "pairs_after": after,
        "adapter": str(adapter_dir.resolve()) if cfg.use_peft else None,
        "merged": str(merged_dir.resolve()) if cfg.save_merged else None, "merged_info": merged_info,
        "pairs_path": str(Path(cfg.pairs).resolve()) if cfg.pairs else None,
        "config": asdict(cfg),
    }
    if acc.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        draw_loss(summary["loss_history"], out / "train_loss.png")
        if cfg.save_merged:
            (out / "model_entry.yaml").write_text(model_entry_yaml(merged_dir.resolve()), encoding="utf-8")
    return summary


def draw_loss(history: list[dict], path: Path) -> None:
    """train_loss.png: the logged training loss (DPO + weighted NLL) and reward accuracy per step."""
    if not history:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(steps, [h["loss"] for h in history], "o-", label="training loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (DPO + weighted NLL)")
    if any("rewards/accuracies" in h for h in history):
        ax2 = ax.twinx()
        ax2.plot(steps, [h.get("rewards/accuracies") for h in history], "s--", color="C1", label="reward accuracy")
        ax2.set_ylabel("reward accuracy")
        ax2.set_ylim(-0.05, 1.05)
        ax2.legend(loc="center right")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _peak_rss_gb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    return round(kb / 2**20, 2)


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def model_entry_yaml(merged: Path) -> str:
    return ("# The tuned teacher as an `lbt m1` model entry (paste as teacher_model_cfg or a student).\n"
            "# CPU / small models, served by `transformers serve`:\n"
            f"teacher_model_cfg: {{model_type: embedded, model_cfg: {{checkpoint: {json.dumps(str(merged))}, "
            "name: m2-tuned}}\n"
            "# GPU, served by `vllm serve` (lbt starts it):\n"
            f"# teacher_model_cfg: {{model_type: vllm, model_cfg: {{model: {json.dumps(str(merged))}, "
            "name: m2-tuned}}\n")


# --- saving ----------------------------------------------------------------------------------------
def write_generation_config(base: str, target: Path) -> None:
    """The base model's generation config with ``do_sample: true`` (`transformers serve` never turns
    sampling on by itself, so without it every request would be greedy)."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(base)
    except OSError:
        from transformers import AutoConfig

        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base))
    gen.do_sample = True
    gen.save_pretrained(str(target))


def merge_adapter(base: str, adapter_dir: str | Path, target: str | Path, merged_dtype: str = "auto",
                  trust_remote_code: bool = False) -> dict:
    """Load `base` on CPU in float32, apply the LoRA adapter, merge (peft `merge_and_unload`), save a
    plain checkpoint with the tokenizer and a sampling generation config into `target`."""
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base_dtype = getattr(AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code), "dtype", None)
    base_dtype = str(base_dtype).replace("torch.", "") if base_dtype is not None else "float32"
    dtype = base_dtype if merged_dtype == "auto" else merged_dtype
    if dtype not in ("float32", "bfloat16", "float16"):
        dtype = "float32"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, str(adapter_dir))
    model = model.merge_and_unload()
    model = model.to(getattr(torch, dtype))
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(target))
    write_generation_config(base, target)
    return {"dtype": dtype, "merged_in": "float32"}


def format_summary(s: dict) -> str:
    """A few lines for the terminal."""
    def f(x, nd=4):
        return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{nd}f}"

    lines = [f"trained {s['steps']} step(s) on {s['pairs']} pair(s) ({s['device']}, {s['precision']}, "
             f"batch {s['effective_batch_size']}): {s['train_wall_s']:.1f} s, {f(s['s_per_step_mean'], 2)} s/step "
             f"({f(s.get('cpu_s_per_step_mean'), 2)} CPU s/step)"]
    b, a = s.get("pairs_before"), s.get("pairs_after")
    if b and a:
        lines.append(f"DPO loss on the training pairs: {f(b['dpo_loss'])} -> {f(a['dpo_loss'])}; "
                     f"reward accuracy {f(b['reward_accuracy'], 2)} -> {f(a['reward_accuracy'], 2)}")
    if s.get("adapter"):
        lines.append(f"adapter: {s['adapter']}")
    if s.get("merged"):
        lines.append(f"merged:  {s['merged']}")
    return "\n".join(lines)
