"""One config convention: every config dataclass checks its values in __post_init__, so a config built in
Python, from YAML or with --set fails alike, with one line naming the key."""

import pytest
import yaml

from lbt_dspy.config import M1Config, apply_sets, dataclass_from_dict, parse_sets
from lbt_dspy.errors import LbtError
from lbt_dspy.m2.pairs import PairConfig
from lbt_dspy.m3.config import LbTOptimizerConfig, M3Config

BAD = [
    (M1Config, {"num_pairs": 0}, "num_pairs"),
    (M1Config, {"concurrency": 0}, "concurrency"),
    (M1Config, {"student_model_cfgs": []}, "student_model_cfgs"),
    (M1Config, {"exam_budget": "some"}, "exam_budget"),
    (M1Config, {"num_retries": -1}, "num_retries"),
    (M1Config, {"exam_budget_cfg": {"confidence": 2.0}}, "exam_budget_cfg"),
    (PairConfig, {"selection": "best"}, "selection"),
    (PairConfig, {"threshold": -0.1}, "threshold"),
    (PairConfig, {"lbt_weight": -1}, "lbt_weight"),
    (PairConfig, {"max_pairs_per_problem": -1}, "max_pairs_per_problem"),
    (PairConfig, {"student": ""}, "student"),
    (LbTOptimizerConfig, {"rounds": -1}, "rounds"),
    (LbTOptimizerConfig, {"scorer": "oracle"}, "scorer"),
    (M3Config, {"num_examples": 0}, "num_examples"),
]


@pytest.mark.parametrize("cls, bad, key", BAD, ids=[f"{c.__name__}-{k}" for c, _, k in BAD])
def test_built_in_python_a_bad_value_raises_naming_the_key(cls, bad, key):
    with pytest.raises((LbtError, ValueError)) as info:
        cls(**bad)
    msg = str(info.value)
    assert key in msg and "\n" not in msg, msg


@pytest.mark.parametrize("cls, bad, key", BAD, ids=[f"{c.__name__}-{k}" for c, _, k in BAD])
def test_from_a_mapping_the_same_check_names_the_file(cls, bad, key):
    with pytest.raises(LbtError) as info:
        dataclass_from_dict(cls, bad, "cfg.yaml")  # the one loader behind every from_dict / from_yaml
    assert str(info.value).startswith("cfg.yaml: ") and key in str(info.value)


def test_the_seed_name_num_rationales():
    with pytest.raises(LbtError, match="num_pairs / num_rationales must be >= 1"):
        M1Config.from_dict({"num_rationales": 0})
    with pytest.raises(TypeError):  # in Python the field is num_pairs; the seed's name is for YAML
        M1Config(num_rationales=0)
    assert M1Config(num_pairs=3).num_pairs == 3


def test_m2_train_configs_built_in_python_raise():
    pytest.importorskip("trl")
    from lbt_dspy.m2.train_config import M2ModelConfig, M2TrainConfig

    ok = {"output_dir": "/tmp/lbt-test-config", "pairs": "p", "use_cpu": True}
    for bad, key in [({"beta": -1}, "beta"), ({"nll_weight": -1}, "nll_weight"), ({"output_dir": ""}, "output_dir"),
                     ({"eval_max_pairs": -1}, "eval_max_pairs"), ({"merged_dtype": "x"}, "merged_dtype")]:
        with pytest.raises(LbtError, match=key):
            M2TrainConfig(**{**ok, **bad})
    with pytest.raises(LbtError, match="lora_alpha"):
        M2ModelConfig(lora_alpha=0)


def test_fields_carry_help():
    import dataclasses

    for cls in (M1Config, PairConfig, LbTOptimizerConfig, M3Config):
        missing = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("help")]
        assert not missing, (cls.__name__, missing)


def test_set_overrides_nested_keys():
    raw = {"dataset_cfg": {"num_families": 8, "seed": 0}, "num_pairs": 4}
    out = apply_sets(raw, ["dataset_cfg.num_families=4", "num_pairs=2", "exam_maker_cfg.num_repetitions=1"])
    assert out == {"dataset_cfg": {"num_families": 4, "seed": 0}, "num_pairs": 2,
                   "exam_maker_cfg": {"num_repetitions": 1}}
    assert raw["dataset_cfg"]["num_families"] == 8  # a copy
    assert parse_sets(["dataset_cfg={seed: 1}"]) == {"dataset_cfg": {"seed": 1}}
    for bad in (["novalue"], ["=3"], ["a..b=1"]):
        with pytest.raises(LbtError, match="expected KEY=VALUE"):
            parse_sets(bad)
    with pytest.raises(LbtError, match="num_pairs is not a mapping"):
        apply_sets(raw, ["num_pairs.x=1"])


def test_set_reaches_lbt_config_from_yaml(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text(yaml.safe_dump({"dataset_type": "arith", "dataset_cfg": {"num_families": 8}}))
    cfg = M1Config.from_yaml(p, ["dataset_cfg.num_families=2", "num_rationales=3"])
    assert cfg.dataset_cfg == {"num_families": 2} and cfg.num_pairs == 3
    with pytest.raises(LbtError, match=r"c.yaml: key concurrency must be >= 1"):
        M1Config.from_yaml(p, ["concurrency=0"])
