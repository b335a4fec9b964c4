"""M2: the teacher learns from its own LbT-scored samples by DPO.

``pairs`` (M1 run directories -> preference pairs), ``train`` (TRL DPOTrainer + optional LoRA ->
adapter/ and merged/), ``evaluate`` (greedy accuracy, base vs tuned), ``cli`` (`lbt m2 ...`).
Heavy dependencies (torch, trl, peft) load only when training runs.
"""

from .pairs import PairConfig, build_pairs, choose_pairs, load_pairs, save_pairs
from .train import M2TrainConfig, merge_adapter, train

__all__ = ["PairConfig", "build_pairs", "choose_pairs", "load_pairs", "save_pairs", "M2TrainConfig",
           "merge_adapter", "train"]
