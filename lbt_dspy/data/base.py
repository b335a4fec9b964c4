"""What every dataset gives: a `TaskData`, registered in `datasets` by its ``dataset_type``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import Registry

datasets = Registry("dataset")

# data/ of the source tree (configs may also give explicit paths)
DATA_DIR = Path(__file__).resolve().parents[2] / "data"


@dataclass
class TaskData:
    """Teaching problems (TPs) and the exam bank the exam maker draws exam problems from."""

    teaching: list[dict]
    exam_bank: list[dict]
