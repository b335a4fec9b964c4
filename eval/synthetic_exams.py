"""Synthetic full-exam results with known ground truth, for the adaptive-exam benchmark and tests."""

from __future__ import annotations

import math

import numpy as np


def synthetic_problems(num_problems: int = 181, num_pairs: int = 256, num_variants: int = 3,
                       num_repetitions: int = 3, seed: int = 0, teacher_skill: float = 0.6,
                       student_skill: float = 0.5, lbt_signal: float = 1.0, wrong_spread: float = 3.0) -> list[dict]:
    """TPs with sampled TR-TA pairs and full exams, whose truth is known.

    Per TP: a difficulty z ~ N(0, 1); the teacher answers right with probability
    sigmoid(logit(teacher_skill) - z); wrong answers fall into groups by a Chinese-restaurant process
    (concentration `wrong_spread`). The student passes exam problem v after pair i with probability
    sigmoid(logit(student_skill) - 0.8 z + lbt_signal * [pair i right] + u_i + d_v), with a pair effect
    u_i ~ N(0, 0.6^2) (how well the rationale teaches) and a variant effect d_v ~ N(0, 0.7^2); each
    variant is asked `num_repetitions` times, slots in exam order ``[v1, v2, v3, v1, ...]``.

    Returns per TP: ``groups`` (answer group per pair; group 0 is the right answer), ``full`` (pairs x
    slots of 0/1), ``correct`` (per pair), ``right_group`` (0).
    """
    rng = np.random.default_rng(seed)
    logit = lambda p: math.log(p / (1 - p))  # noqa: E731
    out = []
    for _ in range(num_problems):
        z = rng.normal()
        q = 1 / (1 + math.exp(-(logit(teacher_skill) - z)))
        groups, counts = [], []
        for _ in range(num_pairs):
            if rng.random() < q:
                groups.append(0)
                continue
            weights = np.array(counts + [wrong_spread], dtype=float)
            k = rng.choice(len(weights), p=weights / weights.sum())
            if k == len(counts):
                counts.append(0)
            counts[k] += 1
            groups.append(k + 1)
        correct = [g == 0 for g in groups]
        d = rng.normal(0, 0.7, num_variants)
        u = rng.normal(0, 0.6, num_pairs)
        base = logit(student_skill) - 0.8 * z
        slots = [v for _ in range(num_repetitions) for v in range(num_variants)]
        p = 1 / (1 + np.exp(-(base + lbt_signal * np.array(correct, float)[:, None] + u[:, None] + d[None, slots])))
        full = (rng.random(p.shape) < p).astype(float).tolist()
        out.append({"groups": groups, "full": full, "correct": correct, "right_group": 0})
    return out
