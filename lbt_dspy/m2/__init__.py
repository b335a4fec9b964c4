"""M2: the teacher learns from its own LbT-scored samples by DPO.

``pairs`` (M1 run directories -> preference pairs), ``train_config`` (`M2TrainConfig`, a `trl.DPOConfig`;
`M2ModelConfig`, a `trl.ModelConfig`), ``trainer`` (`LbTDPOTrainer`, a `trl.DPOTrainer`), ``merge``
(merged/ checkpoints), ``train`` (the `lbt m2 train` recipe), ``evaluate`` (greedy accuracy, base vs
tuned), ``cli`` (`lbt m2 ...`). Heavy dependencies (torch, trl, peft) load only when the training names
are first used.
"""

from .pairs import PairConfig, build_pairs, choose_pairs, load_pairs, save_pairs

_LAZY = {"M2TrainConfig": "train_config", "M2ModelConfig": "train_config", "load_train_config": "train_config",
         "LbTDPOTrainer": "trainer", "merge_adapter": "merge"}

__all__ = ["PairConfig", "build_pairs", "choose_pairs", "load_pairs", "save_pairs", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
