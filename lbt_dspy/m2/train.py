"""`lbt m2 train`: DPO of the teacher on M2 preference pairs, the recipe around `LbTDPOTrainer`.

Outputs in ``output_dir``: ``adapter/`` (the LoRA adapter, with PEFT), ``merged/`` (a plain checkpoint
with tokenizer and the base's generation_config.json, servable by vLLM and
``{"model_type": "embedded", "model_cfg": {"checkpoint": merged}}`` in `lbt m1`),
``checkpoint-N/`` (when ``save_steps`` is reached), ``train_summary.json`` (time per step, losses, DPO
loss on the training pairs before and after), ``train_loss.png`` and ``model_entry.yaml``.
The configuration is in `train_config`, the trainer in `trainer`, saving in `merge`.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict
from pathlib import Path

from ..errors import LbtError


def check_train_output(out: Path) -> None:
    """Refuse an output directory that holds a trained model: results are never overwritten."""
    if out.exists() and not out.is_dir():
        raise LbtError(f"{out}: output_dir exists and is not a directory")
    for name in ("train_summary.json", "adapter", "merged"):
        if (out / name).exists():
            raise LbtError(f"{out}: output_dir already holds a trained model ({name}); choose another "
                           "--output-dir or remove it")


def train(args, model_args=None, train_dataset=None) -> dict:
    """Train, save ``adapter/`` and ``merged/``, and return (and write) the training summary.

    Args:
        args: An `M2TrainConfig`.
        model_args: An `M2ModelConfig` (default: the embedded model without LoRA).
        train_dataset: Preference pairs (default: loaded from ``args.pairs``).
    """
    from transformers.utils import logging as hf_logging

    from .merge import model_entry_yaml
    from .trainer import LbTDPOTrainer

    hf_logging.set_verbosity_error()
    out = Path(args.output_dir)
    check_train_output(out)  # before loading any model
    trainer = LbTDPOTrainer(args, model_args, train_dataset)
    before = trainer.pair_metrics() if args.eval_on_train else None
    t0 = time.perf_counter()
    # TRL's own resume: `resume_from_checkpoint: true` continues from the output_dir's last checkpoint-N/
    result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint or None)
    train_wall = time.perf_counter() - t0
    after = trainer.pair_metrics() if args.eval_on_train else None
    saved = trainer.save_outputs()
    timer = trainer.step_timer
    summary = {
        **trainer.device_summary,
        "steps": trainer.state.global_step, "train_wall_s": round(train_wall, 2),
        **step_times(timer.times, timer.cpu_times),
        "torch_threads": _torch_threads(), "peak_rss_gb": _peak_rss_gb(),
        "train_loss": result.training_loss,
        "loss_history": [{k: v for k, v in h.items() if k in ("step", "loss", "rewards/accuracies",
                                                             "rewards/margins", "learning_rate")}
                         for h in trainer.state.log_history if "loss" in h],
        "pairs_before": before, "pairs_after": after, **saved,
        "pairs_path": str(Path(args.pairs).resolve()) if args.pairs else None,
        "config": {**args.to_dict(), "model": asdict(trainer.model_args)},
    }
    if trainer.accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_summary.json").write_text(json.dumps(summary, indent=1, default=str), encoding="utf-8")
        draw_loss(summary["loss_history"], out / "train_loss.png")
        if saved["merged"]:
            (out / "model_entry.yaml").write_text(model_entry_yaml(Path(saved["merged"])), encoding="utf-8")
    return summary


def step_times(times: list[float], cpu_times: list[float]) -> dict:
    """Mean, median and after-the-first wall seconds per step, and mean CPU seconds per step."""
    def mean(xs):
        return round(sum(xs) / len(xs), 3) if xs else None

    return {"s_per_step_mean": mean(times),
            "s_per_step_median": round(sorted(times)[len(times) // 2], 3) if times else None,
            "s_per_step_after_first": mean(times[1:]), "cpu_s_per_step_mean": mean(cpu_times)}


def draw_loss(history: list[dict], path: Path) -> None:
    """train_loss.png: the logged training loss (DPO + weighted NLL) and reward accuracy per step."""
    if not history:
        return
    from ..plotting import figure, save

    steps = [h["step"] for h in history]
    fig, ax = figure(6, 4)
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
    save(fig, path)


def _peak_rss_gb() -> float | None:
    try:
        import resource
    except ImportError:  # not on Windows
        return None
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


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
