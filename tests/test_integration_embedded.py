"""The real embedded model through a real vLLM server (the CPU build): a tiny M1 end to end, started by lbt from a
``model_type: vllm`` entry on a local checkpoint — the code path a GPU user takes."""

import json

import pytest
import yaml

from lbt_dspy.cli import main

pytestmark = pytest.mark.integration


def test_tiny_m1_on_a_vllm_entry_lbt_starts_on_the_cpu(tmp_path, capsys):
    from lbt_dspy.models import checkpoint_path

    cfg = yaml.safe_load(open("configs/demo.yaml"))
    entry = {"model_type": "vllm", "model_cfg": {"model": str(checkpoint_path()), "name": "smollm2-135m"}}
    cfg.update(teacher_model_cfg=entry, student_model_cfgs=[entry],
               dataset_cfg={"num_families": 2, "num_variants": 2, "seed": 0}, num_pairs=2,
               exam_maker_cfg={"num_exam_questions": 2, "num_repetitions": 1}, concurrency=4)
    cfg["teacher_sample_cfg"]["max_new_tokens"] = 48
    cfg["general_student_sample_cfg"]["max_new_tokens"] = 48
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "run"
    assert main(["m1", str(path), "--output-path", str(out), "-q"]) == 0
    printed = capsys.readouterr().out
    assert "LM calls this run: 14 (greedy 2, teacher 4, students 8)" in printed
    for method in ("Greedy", "SC", "M1 MAX", "M1 SUM"):
        assert f"| {method} |" in printed
    teach = [json.loads(x) for x in open(out / "teach.jsonl")]
    assert len(teach) == 4 and all(r["completion"] for r in teach)  # the model really wrote
    assert "vLLM prefix cache:" in printed  # the engine's counters, read from its /metrics
    assert json.loads((out / "engine.json").read_text())["prefix_cache"]["queries"] > 0
    assert (out / "report.md").exists() and (out / "accuracy_vs_pairs.png").stat().st_size > 1000
