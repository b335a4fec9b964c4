"""The math M1 program: a ready `M1` module built from an lbt config file.

Example:
    >>> from programs.math_m1 import math_m1  # doctest: +SKIP
    >>> with math_m1("configs/math181_paper.yaml") as (m1, data):  # doctest: +SKIP
    ...     pred = m1(item=data.teaching[0])
    ...     print(pred.answer)
"""

from __future__ import annotations

from contextlib import contextmanager

from lbt_dspy.components import build_components, build_students, build_teacher
from lbt_dspy.config import LbtConfig
from lbt_dspy.lbt_score import LbTScore
from lbt_dspy.m1 import M1
from lbt_dspy.models import ModelPool


@contextmanager
def math_m1(config_path: str, method: str = "M1 SUM"):
    """Yield ``(m1, data)``: the M1 program of a config and its dataset; servers stop on exit."""
    cfg = LbtConfig.from_yaml(config_path)
    parts = build_components(cfg)
    with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries) as pool:
        teacher = build_teacher(cfg, pool, parts.adapter)
        students = build_students(cfg, pool, parts.adapter)
        yield M1(teacher, LbTScore(students, parts.exam_maker, parts.scorer), method=method), parts.data
