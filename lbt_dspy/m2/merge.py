"""Saving a tuned teacher so every backend can serve it: the LoRA merge, the base's generation config, and
the model entry to paste into an `lbt` config."""

from __future__ import annotations

import json
from pathlib import Path


def write_generation_config(base: str, target: Path) -> None:
    """The base model's generation config, unchanged (sampling is per request: vLLM honours each request's;
    the `transformers serve` fallback serves a sampling view of the checkpoint, see `models.embedded`)."""
    from transformers import GenerationConfig

    try:
        gen = GenerationConfig.from_pretrained(base)
    except OSError:
        from transformers import AutoConfig

        gen = GenerationConfig.from_model_config(AutoConfig.from_pretrained(base))
    gen.save_pretrained(str(target))


def merge_adapter(base: str, adapter_dir: str | Path, target: str | Path, merged_dtype: str = "auto",
                  trust_remote_code: bool = False) -> dict:
    """Load `base` on CPU in float32, apply the LoRA adapter, merge (peft `merge_and_unload`), save a
    plain checkpoint with the tokenizer and the base's generation config into `target`.

    Example:
        >>> merge_adapter("base/", "out/adapter", "out/merged", "auto")  # doctest: +SKIP
        {'dtype': 'bfloat16', 'merged_in': 'float32'}
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    base_dtype = getattr(AutoConfig.from_pretrained(base, trust_remote_code=trust_remote_code), "dtype", None)
    base_dtype = str(base_dtype).replace("torch.", "") if base_dtype is not None else "float32"
    dtype = base_dtype if merged_dtype == "auto" else merged_dtype
    if dtype not in ("float32", "bfloat16", "float16"):
        dtype = "float32"
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32, trust_remote_code=trust_remote_code)
    model = PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()  # merged in float32
    model = model.to(getattr(torch, dtype))
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    AutoTokenizer.from_pretrained(str(adapter_dir)).save_pretrained(str(target))
    write_generation_config(base, target)
    return {"dtype": dtype, "merged_in": "float32"}


def model_entry_yaml(merged: Path) -> str:
    """The tuned teacher as `lbt` model entries (embedded on CPU, vllm on GPU), as YAML text."""
    return ("# The tuned teacher as an `lbt m1` model entry (paste as teacher_model_cfg or a student).\n"
            "# served by vLLM on this machine (CPU build, or CUDA build with a GPU):\n"
            f"teacher_model_cfg: {{model_type: embedded, model_cfg: {{checkpoint: {json.dumps(str(merged))}, "
            "name: m2-tuned}}\n"
            "# or as a plain vLLM entry (lbt starts the server; add serve_args for tensor/data parallelism):\n"
            f"# teacher_model_cfg: {{model_type: vllm, model_cfg: {{model: {json.dumps(str(merged))}, "
            "name: m2-tuned}}\n")
