"""Models: every backend is a `dspy.LM` over one OpenAI-compatible client path."""

from .embedded import EmbeddedServer, checkpoint_path
from .engine import OpenAICompatEngine
from .lm import ModelPool, model_types, normalize_sample_cfg
from . import huggingface as _huggingface  # noqa: E402,F401,I001  (registers model_type huggingface)

__all__ = ["EmbeddedServer", "checkpoint_path", "OpenAICompatEngine", "ModelPool", "model_types",
           "normalize_sample_cfg"]
