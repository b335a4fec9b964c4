"""Models: every backend is a `dspy.LM` over one OpenAI-compatible client path."""

from .embedded import TransformersServer, checkpoint_path
from .engine import OpenAICompatEngine
from .pool import LbtLM, ModelPool, model_types, normalize_sample_cfg
from .vllm_server import VLLMServer
from . import huggingface as _huggingface  # noqa: E402,F401,I001  (registers model_type huggingface)

__all__ = ["VLLMServer", "TransformersServer", "checkpoint_path", "OpenAICompatEngine", "LbtLM", "ModelPool",
           "model_types", "normalize_sample_cfg"]
