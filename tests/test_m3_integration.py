"""M3 with the real embedded model (SmolLM2-135M served by vLLM): one tiny round, end to end."""

import json

import pytest
import yaml

from lbt_dspy.cli import main

pytestmark = pytest.mark.integration


def test_one_tiny_m3_round_on_the_embedded_model(tmp_path, capsys, embedded_server):
    cfg = yaml.safe_load(open("configs/m3_liar.yaml"))
    for key in ("teacher_model_cfg",):
        cfg[key] = {**cfg[key], "model_cfg": {**(cfg[key].get("model_cfg") or {}), "api_base": embedded_server.api_base}}
    cfg["student_model_cfgs"] = [{**e, "model_cfg": {**(e.get("model_cfg") or {}), "api_base": embedded_server.api_base}}
                                 for e in cfg["student_model_cfgs"]]
    cfg.update(train_size=24, test_size=6, rounds=1, beam_size=1, minibatch_size=4, reflections_per_set=1,
               failures_per_reflection=2, score_sample_size=4, baselines=["zero_shot"], concurrency=4)
    cfg["teacher_sample_cfg"]["max_new_tokens"] = 48
    cfg["reason_max_new_tokens"] = 32
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    rc = main(["m3", str(path), "--output-path", str(out), "-q"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    assert "| LbT (= self) |" in printed and "LM calls this run:" in printed

    rounds = [json.loads(x)["record"] for x in open(out / "rounds.jsonl")]
    assert [r["round"] for r in rounds] == [0, 1]
    r0, r1 = rounds
    assert r0["calls"]["score"] == 4 and r0["calls"]["failed"] == 0
    assert [e["answered"] for e in r1["exams"]] == [4]  # the student really took the exam
    failed = r1["exams"][0]["failed"]
    # The teacher reflects exactly when the student failed, and its answers are recorded verbatim.
    assert r1["calls"]["teacher_reflect"] == (1 if failed else 0)
    assert all(x["response"] for x in r1["reflections"])
    assert r1["calls"]["teacher_write"] == sum(len(x["reasons"]) for x in r1["reflections"])
    evals = [json.loads(x) for x in open(out / "eval.jsonl")]
    assert {e["key"] for e in evals} == {"baseline/zero_shot/teacher", "LbT/0/teacher", "LbT/1/teacher"}
    assert all(e["n"] == 6 for e in evals)
    assert (out / "report.md").exists() and (out / "f1_vs_round.png").stat().st_size > 1000
    assert (out / "best_program_LbT.json").exists()


def test_a_program_with_its_own_fields_compiles_and_runs_under_dspys_default_adapter(embedded_server):
    """A 3-class program with its own field names, compiled by `LbTOptimizer` with the embedded model as teacher
    and student, then run under DSPy's default adapter (ChatAdapter, falling back to JSONAdapter, whose JSON
    schema the engine passes to vLLM): every prediction is one of the labels, none an AdapterParseError."""
    from typing import Literal

    import dspy

    from lbt_dspy.m3 import LbTOptimizer
    from lbt_dspy.models import ModelPool

    class Weather(dspy.Signature):
        """Classify the climate of the weather report."""

        report: str = dspy.InputField()
        climate: Literal["hot", "cold", "mild"] = dspy.OutputField()

    words = {"hot": ["scorching sun, 41 degrees", "heat wave, 38 C at noon", "burning hot desert wind"],
             "cold": ["snow and ice, minus 12", "freezing fog, -5 C", "blizzard, deep frost"],
             "mild": ["light breeze, 19 degrees", "pleasant spring day, 20 C", "soft rain, 17 C"]}
    train = [dspy.Example(report=r, climate=c).with_inputs("report") for c, rs in words.items() for r in rs]
    with ModelPool(cache=False, num_retries=2) as pool:
        entry = {"model_type": "embedded", "model_cfg": {"api_base": embedded_server.api_base}}
        lm = pool.lm(entry, {"temperature": 0.0, "max_new_tokens": 48})
        teacher = pool.lm(entry, {"temperature": 0.7, "max_new_tokens": 120})
        opt = LbTOptimizer(students=[lm], num_examples=3, rounds=1, beam_size=1, minibatch_size=6,
                           reflections_per_set=1, score_sample_size=6, num_threads=4)
        with dspy.context(lm=lm):  # no adapter given: DSPy's default, ChatAdapter
            tuned = opt.compile(dspy.Predict(Weather), trainset=train, teacher=teacher)
            preds = [tuned(report=r) for r in ("icy wind, minus 20", "sunny, 35 degrees", "cloudy, 18 C")]
    assert set(opt.fields.labels) == {"cold", "hot", "mild"} and tuned._compiled
    assert all(p.climate in ("hot", "cold", "mild") for p in preds), [p.climate for p in preds]
