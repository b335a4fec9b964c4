"""`lbt_dspy.lm(...)`: a `dspy.LM` built exactly as a config's model entry, for Python users.

The same `ModelPool` that `lbt m1` uses builds it, so a program composed in Python sends the same
requests as the CLI: the right prefill mode (the paper's assistant prefill, continued byte for byte), the seed's
sampling keys, a short model name. Servers it starts (``embedded``, or ``vllm`` without ``api_base``: one
vLLM server per checkpoint, whatever the sampling) are started once per process and stopped when the
process exits.
"""

from __future__ import annotations

import atexit
import threading

import dspy

from .models import ModelPool

_POOL: ModelPool | None = None
_LOCK = threading.Lock()


def _pool() -> ModelPool:
    global _POOL
    with _LOCK:
        if _POOL is None:
            _POOL = ModelPool()
            atexit.register(_POOL.close)
        return _POOL


def lm(entry: str | dict = "embedded", cache: bool = True, **sampling) -> dspy.LM:
    """A `dspy.LM` for a model entry, as in a config file.

    Args:
        entry: A model type name (``"embedded"``, ``"openai"``, ``"vllm"``, ...) or a config entry
            ``{"model_type": ..., "model_cfg": {...}, "sample_cfg": {...}}``; a type name alone takes
            the type's defaults (``"openai"`` needs a mapping with ``model_cfg.model``).
        **sampling: Sampling settings, with the config's keys and meanings (``temperature``, ``top_k``,
            ``max_tokens`` or ``max_new_tokens``, ``stop``, ``do_sample: False`` for greedy); they
            override the entry's ``sample_cfg``.
        cache: DSPy's response cache (the config key ``cache``).

    Example:
        >>> teacher_lm = lbt_dspy.lm("embedded", temperature=0.7, max_tokens=80)  # doctest: +SKIP
        >>> lbt_dspy.lm({"model_type": "vllm", "model_cfg": {"model": "meta-llama/Meta-Llama-3-8B-Instruct",
        ...              "api_base": "http://gpu-box:8000/v1"}}, temperature=0.7)  # doctest: +SKIP
    """
    if isinstance(entry, str):
        entry = {"model_type": entry}
    entry = dict(entry)
    sample = {**(entry.pop("sample_cfg", None) or {}), **sampling}
    built = _pool().lm(entry, sample, where="lbt_dspy.lm")
    return built if cache else built.copy(cache=False)
