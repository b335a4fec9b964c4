"""The math M1 program: the `M1` module of an lbt config file — the very module `lbt m1` runs.

Example:
    >>> from programs.math_m1 import math_m1  # doctest: +SKIP
    >>> with math_m1("configs/math181_paper.yaml") as (m1, data):  # doctest: +SKIP
    ...     pred = m1(**data.teaching[0])
    ...     print(pred.answer, [c.lbt_score for c in pred.pairs])
"""

from __future__ import annotations

from contextlib import contextmanager

from lbt_dspy.components import build_components, build_m1
from lbt_dspy.config import M1Config
from lbt_dspy.models import ModelPool


@contextmanager
def math_m1(config_path: str, method: str = "M1 SUM"):
    """Yield ``(m1, data)``: the M1 program of a config (``concurrency`` is its ``num_threads``) and its
    dataset; servers the config starts stop on exit."""
    cfg = M1Config.from_yaml(config_path)
    parts = build_components(cfg)
    with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries) as pool:
        yield build_m1(cfg, pool, parts, method=method), parts.data
