"""`vllm serve MODEL` launched and stopped by lbt (GPU machines with the `[vllm]` extra)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from ..errors import LbtError
from .embedded import EmbeddedServer


class VLLMServer(EmbeddedServer):
    """A `vllm serve` process on a free loopback port, same lifecycle as `EmbeddedServer`.

    Args:
        model: Model name or path for ``vllm serve``.
        serve_args: Extra command-line arguments (e.g. ``["--tensor-parallel-size", "2"]``).
        log_dir: Directory for the server log.
    """

    def __init__(self, model: str, serve_args: list | None = None, log_dir: str | None = None):
        if shutil.which("vllm") is None and not _has_vllm():
            raise LbtError("model_type vllm: no api_base given and vllm is not installed (pip install 'lbt-dspy[vllm]')")
        log = Path(log_dir) / "vllm.log" if log_dir else None
        super().__init__(checkpoint=model, log_path=log, startup_timeout=1200.0)
        self.checkpoint = model
        self.serve_args = [str(a) for a in (serve_args or [])]

    @property
    def model(self) -> str:
        return str(self.checkpoint)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve", str(self.checkpoint),
                "--host", "127.0.0.1", "--port", str(self.port), *self.serve_args]


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None
