"""``model_type: huggingface``: the seed's local-checkpoint model, served by lbt on the one client path.

The seed loaded the checkpoint into a transformers ``pipeline`` in-process. lbt serves it instead with vLLM
(`VLLMServer`: the CPU build without a GPU, the CUDA build with one; ``server: transformers`` selects the
fallback) and talks to it like to every other backend. The prompt is the seed's: the checkpoint's chat template
with the generation prompt, then the assistant prefill, continued on ``/v1/completions``.

The seed's ``model_cfg`` keys: ``path`` (a local checkpoint directory; nothing is downloaded),
``pt_path`` (the seed's DPO checkpoints: ``torch.load(pt_path)["state"]`` is loaded into the model, which
lbt saves once as a merged checkpoint in its cache and serves), ``max_new_tokens`` (default length when the
sampling settings give none), ``name``, ``conv_template_type`` and ``fastchat`` (fastchat templates are
not supported: ``fastchat: true`` is an error; with the seed's default ``false`` ``conv_template_type`` is
unused, as in the seed). lbt adds ``api_base`` (a server already serving `path`) and ``serve_args``.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ..errors import LbtError
from .pool import SERVERS, ModelEntry, _local_entry, local_endpoints, model_types


def merged_checkpoint(path: str, pt_path: str) -> Path:
    """`path` with the state dict ``torch.load(pt_path)["state"]`` loaded, saved once under lbt's cache
    (keyed by both files); returns the merged checkpoint's directory."""
    from .embedded import cache_dir

    pt = Path(pt_path)
    if not pt.is_file():
        raise LbtError(f"model_cfg.pt_path: {pt_path} is not a file on disk")
    stat = pt.stat()
    key = hashlib.sha256(f"{Path(path).resolve()}|{pt.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    target = cache_dir() / "merged" / key
    if (target / "config.json").exists():
        return target
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        state = torch.load(pt, map_location="cpu", weights_only=True)["state"]
    except KeyError:
        raise LbtError(f"model_cfg.pt_path: {pt_path} has no 'state' entry (the seed's DPO checkpoint format)") from None
    except Exception as exc:
        raise LbtError(f"model_cfg.pt_path: {pt_path} could not be read ({type(exc).__name__}: {exc})") from None
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype="auto")
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise LbtError(f"model_cfg.pt_path: {pt_path} does not fit {path} ({str(exc).splitlines()[0]})") from None
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".merge-"))
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(path).save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent merge either wins or finds the result
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@model_types.register("huggingface")
def huggingface_entry(pool, sample_kwargs, path: str, pt_path: str | None = None, max_new_tokens: int = 1024,
                      conv_template_type: str | None = None, name: str | None = None, fastchat: bool = False,
                      api_base: str | list | None = None, serve_args: list | None = None,
                      server: str = "vllm", timeout: float = 600.0) -> ModelEntry:
    """A local checkpoint (the seed's ``huggingface`` model), served by lbt.

    Args:
        path: Local checkpoint directory (the seed's hub names must be replaced by a local copy).
        pt_path: A seed DPO checkpoint whose ``["state"]`` is loaded into the model before serving.
        max_new_tokens: Default generation length (the seed's default 1024) when sampling settings set none.
        conv_template_type: Only meaningful with fastchat templates (unused otherwise, as in the seed).
        name: Name in the output (default: `path`, as in the seed).
        fastchat: Must be false: lbt renders the checkpoint's own chat template (the seed's default).
        api_base: A server already serving this checkpoint; lbt then starts none.
        serve_args: Extra vLLM server arguments.
        server: ``vllm`` (the engine, CPU or GPU; ``auto`` is the same) or ``transformers`` (the fallback).

    Example:
        >>> entry = {"model_type": "huggingface", "model_cfg": {"path": "/models/Meta-Llama-3-8B-Instruct"}}
        >>> with ModelPool() as pool:  # doctest: +SKIP
        ...     lm = pool.lm(entry, {"do_sample": False})
    """
    if fastchat:
        raise LbtError("model_cfg.fastchat: true is not supported (fastchat conversation templates); lbt renders "
                       "the checkpoint's own chat template, the seed's default fastchat: false")
    if not isinstance(path, str) or not Path(path).is_dir():
        raise LbtError(f"model_cfg.path: {path} is not a checkpoint directory on disk (lbt downloads nothing from a "
                       "hub; point path at a local copy)")
    if not (Path(path) / "config.json").is_file():
        raise LbtError(f"model_cfg.path: {path} has no config.json (not a transformers checkpoint)")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise LbtError(f"model_cfg.max_new_tokens: expected an integer >= 1, got {max_new_tokens!r}")
    if server not in ("auto", *SERVERS):
        raise LbtError(f"model_cfg.server: 'vllm' or 'transformers', got {server!r}")
    sample_kwargs.setdefault("max_tokens", max_new_tokens)  # the seed set generation_config.max_new_tokens
    served = str(merged_checkpoint(path, pt_path)) if pt_path else path
    if server == "auto":  # configs written when transformers served machines without a GPU: vLLM serves all now
        server = "vllm"
    model = served
    if api_base is None:
        api_base, model = local_endpoints(pool, served, sample_kwargs, "model_cfg", server, serve_args)
    return _local_entry(name or path, served, api_base, server, timeout, served=model)


@model_types.register("stub")
def stub_entry(pool, sample_kwargs, **kwargs) -> ModelEntry:
    """The seed's ``stub`` model (fixed "random answer N" texts) is not provided."""
    raise LbtError("model_type stub: not supported (the seed's fixed-text test model); for a scripted model use an "
                   "`openai` entry whose api_base is a local OpenAI-compatible test server, or model_type embedded")
