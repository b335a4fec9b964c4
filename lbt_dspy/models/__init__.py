"""Models: every backend is a `dspy.LM` over one OpenAI-compatible client path."""

from .embedded import EmbeddedServer, checkpoint_path
from .engine import OpenAICompatEngine
from .lm import ModelPool, model_types, normalize_sample_cfg

__all__ = ["EmbeddedServer", "checkpoint_path", "OpenAICompatEngine", "ModelPool", "model_types",
           "normalize_sample_cfg"]
