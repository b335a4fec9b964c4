"""`LbTDPOTrainer`: TRL's `DPOTrainer` with what M2 measures and saves.

Multi-GPU: ``accelerate launch -m lbt_dspy.cli m2 train CFG`` (no code change; the batch is then
``per_device_train_batch_size x gradient_accumulation_steps x processes``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path

import torch
from transformers import AutoTokenizer, TrainerCallback
from trl import DPOTrainer, get_peft_config, get_quantization_config

from ..errors import LbtError
from .merge import merge_adapter, write_generation_config
from .train_config import M2ModelConfig, M2TrainConfig


class StepTimer(TrainerCallback):
    """Records each optimizer step's wall time (``times``) and this process's CPU seconds (``cpu_times``,
    all threads: robust to a busy machine)."""

    def __init__(self):
        self.times: list[float] = []
        self.cpu_times: list[float] = []
        self._t0 = self._c0 = None

    def on_step_begin(self, args, state, control, **kw):
        self._t0, self._c0 = time.perf_counter(), time.process_time()

    def on_step_end(self, args, state, control, **kw):
        if self._t0 is not None:
            self.times.append(time.perf_counter() - self._t0)
            self.cpu_times.append(time.process_time() - self._c0)
            self._t0 = None


class LbTDPOTrainer(DPOTrainer):
    """DPO of the teacher on LbT-scored preference pairs (TRL's `DPOTrainer`, optionally LoRA through PEFT).

    On top of `DPOTrainer` it owns: loading the pairs (``args.pairs``) and the model named by a
    `trl.ModelConfig` (``model_init_kwargs`` from its dtype/revision/attention; LoRA from
    `trl.get_peft_config`; ``embedded`` means lbt's SmolLM2 checkpoint), the pair metrics (the DPO term
    alone, without the NLL term), step timing, and the outputs ``adapter/`` and ``merged/``.

    Training optimises TRL's loss (``args.loss_type`` with ``args.loss_weights``: the DPO terms) plus M2's NLL
    term on the chosen answers weighted ``args.nll_weight``; evaluation (``evaluate``, `pair_metrics`) reports
    TRL's loss alone, the DPO loss the paper means.

    TRL extension point: ``compute_loss``, the `transformers.Trainer` method subclasses override; ours adds
    the NLL term to what `DPOTrainer.compute_loss` returns while the model trains, and touches no attribute
    of TRL's. (TRL's ``loss_type=[..., "sft"]`` gives the same training loss but holds for evaluation too,
    and TRL 1.16 has no way to evaluate other terms than it trains.) The term comes from the same forward
    pass, no second one: TRL runs the policy through its public fused LM head (`trl.trainer.add_fused_lm_head`:
    ``model(..., fused_lm_head=True)`` returns a `FusedCausalLMOutput` whose ``log_probs`` are per token),
    which a forward hook reads during that call (`policy_log_probs`); the batch is as
    `DataCollatorForPreference` documents it (chosen rows first, ``completion_mask``). `chosen_nll` is the
    formula of TRL's ``"sft"`` term, so the loss is the number TRL's ``["sigmoid", "sft"]`` with weights
    ``[1, nll_weight]`` gives (``tests/test_m2_train.py`` checks both on one batch). A TRL that stops calling
    the policy that way is an error here, not a silently different loss.

    Args:
        args: An `M2TrainConfig` (a `trl.DPOConfig`).
        model_args: An `M2ModelConfig` (a `trl.ModelConfig`); default: the embedded model, no LoRA.
        train_dataset: Preference pairs; default: loaded from ``args.pairs``.
        **kwargs: Passed to `DPOTrainer` (callbacks, eval_dataset, ...).

    Example:
        >>> trainer = LbTDPOTrainer(M2TrainConfig(output_dir="out", pairs="runs/pairs", use_cpu=True),
        ...                         M2ModelConfig(use_peft=True))  # doctest: +SKIP
        >>> before = trainer.pair_metrics(); trainer.train(); after = trainer.pair_metrics()  # doctest: +SKIP
        >>> trainer.save_outputs()  # adapter/ and merged/ in args.output_dir  # doctest: +SKIP
    """

    def __init__(self, args: M2TrainConfig, model_args: M2ModelConfig | None = None, train_dataset=None, **kwargs):
        from .pairs import load_pairs

        self.model_args = model_args or M2ModelConfig()
        self.model_path = resolve_model_path(self.model_args.model_name_or_path or "embedded")
        dataset = train_dataset if train_dataset is not None else load_pairs(args.pairs)
        if args.max_pairs:
            dataset = dataset.select(range(min(args.max_pairs, len(dataset))))
        self.pairs = dataset  # untokenized, for pair_metrics
        # As TRL's own scripts do: the model config becomes the policy's (and reference's) loading arguments.
        args.model_init_kwargs = {"dtype": self.model_args.dtype, "revision": self.model_args.model_revision,
                                  "attn_implementation": self.model_args.attn_implementation,
                                  **(args.model_init_kwargs or {})}
        self.step_timer = StepTimer()
        super().__init__(model=self.model_path, args=args, train_dataset=dataset,
                         processing_class=load_tokenizer(self.model_path, args.trust_remote_code),
                         peft_config=get_peft_config(self.model_args),
                         quantization_config=get_quantization_config(self.model_args),
                         callbacks=[self.step_timer, *kwargs.pop("callbacks", [])], **kwargs)

    # --- the loss --------------------------------------------------------------------------------------
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """TRL's DPO loss, plus ``nll_weight`` x `chosen_nll` while training (evaluation: TRL's loss alone)."""
        weight = self.args.nll_weight
        if not (model.training and weight):
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        with policy_log_probs(model) as seen:
            out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if len(seen) != 1:
            import trl

            raise LbtError(f"nll_weight: M2's NLL term reads the log-probs of TRL's one policy forward through its "
                           f"fused LM head (model(..., fused_lm_head=True)); TRL {trl.__version__} made {len(seen)} "
                           "such calls (a TRL this trainer does not know)")
        nll = chosen_nll(seen[0], inputs["completion_mask"])
        if return_outputs:
            return (out[0] + weight * nll, *out[1:])
        return out + weight * nll

    def pair_metrics(self, dataset=None, max_pairs: int | None = None) -> dict:
        """DPO loss (no NLL term), reward accuracy and margin, chosen/rejected log-probs of the current model
        on `dataset` (default: the training pairs, the first ``args.eval_max_pairs``)."""
        dataset = self.pairs if dataset is None else dataset
        limit = self.args.eval_max_pairs if max_pairs is None else max_pairs
        if limit and len(dataset) > limit:
            dataset = dataset.select(range(limit))
        m = self.evaluate(eval_dataset=dataset, metric_key_prefix="pairs")

        def get(name):  # TRL logs its own metrics under eval_*, the Trainer's under the prefix
            return m.get(f"pairs_{name}", m.get(f"eval_{name}"))

        return {"dpo_loss": get("loss"), "reward_accuracy": get("rewards/accuracies"),
                "reward_margin": get("rewards/margins"), "logps_chosen": get("logps/chosen"),
                "logps_rejected": get("logps/rejected")}

    @property
    def device_summary(self) -> dict:
        """Where and how it trains: device, precision, processes, effective batch, loss terms."""
        a = self.args
        return {"device": a.device.type, "precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "fp32",
                "model_path": self.model_path, "model_dtype": self.model_args.dtype, "pairs": len(self.pairs),
                "num_processes": self.accelerator.num_processes,
                "effective_batch_size": a.per_device_train_batch_size * a.gradient_accumulation_steps
                * self.accelerator.num_processes,
                "loss_type": a.loss_terms()[0], "loss_weights": a.loss_terms()[1]}

    # --- outputs ---------------------------------------------------------------------------------------
    def save_outputs(self) -> dict:
        """Save ``adapter/`` (LoRA) and ``merged/`` (a plain checkpoint with tokenizer and a sampling
        generation config) into ``args.output_dir``; returns their paths and the merged dtype."""
        out = Path(self.args.output_dir)
        adapter_dir, merged_dir = out / "adapter", out / "merged"
        use_peft = self.model_args.use_peft
        main = self.accelerator.is_main_process
        merged_info = None
        self.accelerator.wait_for_everyone()
        if use_peft:
            self.save_model(str(adapter_dir))
            if main:
                self.processing_class.save_pretrained(str(adapter_dir))
        if self.args.save_merged:
            if not use_peft:
                self.save_model(str(merged_dir))
                if main:
                    self.processing_class.save_pretrained(str(merged_dir))
                    write_generation_config(self.model_path, merged_dir)
                    merged_info = {"dtype": "as trained"}
            elif main:
                merged_info = merge_adapter(self.model_path, adapter_dir, merged_dir, self.args.merged_dtype,
                                            trust_remote_code=self.args.trust_remote_code)
        self.accelerator.wait_for_everyone()
        return {"adapter": str(adapter_dir.resolve()) if use_peft else None,
                "merged": str(merged_dir.resolve()) if self.args.save_merged else None, "merged_info": merged_info}


@contextmanager
def policy_log_probs(model):
    """Collects the per-token log-probs (``FusedCausalLMOutput.log_probs``) of every call of `model` with the fused
    LM head and gradients on, i.e. TRL's policy forward (its reference forward runs without gradients)."""
    seen: list = []

    def hook(module, args, kwargs, output):
        if kwargs.get("fused_lm_head") and torch.is_grad_enabled():
            seen.append(output.log_probs)

    handle = model.register_forward_hook(hook, with_kwargs=True)
    try:
        yield seen
    finally:
        handle.remove()


def chosen_nll(log_probs, completion_mask):
    """The NLL term: minus the mean log-prob of the chosen completions' tokens (the first half of the batch), as
    TRL's ``"sft"`` loss type computes it.

    Args:
        log_probs: Per-token log-probs of the next token, ``(2B, L - 1)`` (prompt-learning PEFT: longer; the last
            ``L - 1`` positions are the sequence's).
        completion_mask: The batch's ``(2B, L)`` completion mask (1 on completion tokens).

    Example:
        >>> lp = torch.tensor([[-1.0, -2.0, -3.0], [-9.0, -9.0, -9.0]])
        >>> chosen_nll(lp, torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1]])).item()  # tokens 2, 3 of the chosen row
        2.5
    """
    shift_mask = completion_mask[..., 1:]
    per_token = log_probs[:, -shift_mask.size(1):]
    chosen, _ = per_token.chunk(2, dim=0)
    chosen_mask, _ = shift_mask.chunk(2, dim=0)
    return -chosen[chosen_mask.bool()].mean()


def resolve_model_path(model: str) -> str:
    """A checkpoint directory (checked), a Hub id, or 'embedded' (lbt's SmolLM2 checkpoint) as a path or id."""
    if model == "embedded":
        from ..models.embedded import checkpoint_path

        return str(checkpoint_path())
    path = Path(model).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise LbtError(f"model_name_or_path: {path} has no config.json (not a transformers checkpoint)")
        return str(path.resolve())
    return model  # a Hub id


def load_tokenizer(model_path: str, trust_remote_code: bool = False):
    """The model's tokenizer, with a pad token; the pairs are chat prompts, so it needs a chat template."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
    except OSError as exc:
        raise LbtError(f"model_name_or_path: cannot load a tokenizer from {model_path!r} ({exc})") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if not getattr(tokenizer, "chat_template", None):
        raise LbtError(f"model_name_or_path: {model_path} has no chat template; the pairs are chat prompts")
    return tokenizer
