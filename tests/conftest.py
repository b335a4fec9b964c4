import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")


@pytest.fixture(autouse=True)
def _isolated_dspy_cache(tmp_path_factory, monkeypatch):
    """Each test gets its own DSPy disk cache, so no test passes thanks to another's cached answers."""
    import dspy

    cache = str(tmp_path_factory.mktemp("dspy_cache"))
    monkeypatch.setenv("DSPY_CACHEDIR", cache)
    dspy.configure_cache(enable_disk_cache=True, enable_memory_cache=True, disk_cache_dir=cache)
    yield


@pytest.fixture
def fake_server():
    from fake_openai import FakeOpenAI

    with FakeOpenAI() as srv:
        yield srv


def m3_config(tmp_path, api_base: str, **over) -> dict:
    """An M3 config against the fake server: a 16-text positive/negative task written to `tmp_path`, one student."""
    import json

    rows = [{"label": i % 2, "text": f"{'pos' if i % 2 else 'neg'}-{i}"} for i in range(16)]
    for name in ("train", "test"):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    model = {"model": "fake", "api_base": api_base, "api_key_env": "FAKE_API_KEY"}
    cfg = {"dataset_type": "jsonl", "question": "Is the text positive?", "dataset_cfg": {"data_dir": str(tmp_path)},
           "teacher_model_cfg": {"model_type": "openai", "model_cfg": model},
           "student_model_cfgs": [{"model_type": "openai", "model_cfg": {**model, "name": "student-a"}}],
           "num_examples": 2, "rounds": 3, "beam_size": 1, "minibatch_size": 4, "reflections_per_set": 1,
           "score_sample_size": 4, "baselines": ["zero_shot"], "concurrency": 2, "num_retries": 0}
    cfg.update(over)
    return cfg


def fake_config(api_base: str, **over) -> dict:
    """An M1 config against the fake server: 3 arithmetic families, 2 pairs, 2 exam problems."""
    cfg = {
        "teacher_model_cfg": {"model_type": "openai",
                              "model_cfg": {"model": "fake", "api_base": api_base, "api_key_env": "FAKE_API_KEY"}},
        "teacher_sample_cfg": {"temperature": 0.7, "max_new_tokens": 32},
        "student_model_cfgs": [{"model_type": "openai",
                                "model_cfg": {"model": "fake", "name": "fake-student", "api_base": api_base,
                                              "api_key_env": "FAKE_API_KEY"}}],
        "general_student_sample_cfg": {"temperature": 0.7, "max_new_tokens": 32},
        "dataset_type": "arith", "dataset_cfg": {"num_families": 3, "num_variants": 2, "seed": 1},
        "num_rationales": 2,
        "exam_maker_type": "func", "exam_maker_cfg": {"num_exam_questions": 2, "num_repetitions": 1},
        "exam_prompter_cfg": {"stub_teaching_items": []},
        "concurrency": 2, "cache": False, "num_retries": 0,
    }
    cfg.update(over)
    if "num_pairs" in over:  # lbt's name of the seed's num_rationales
        cfg.pop("num_rationales", None)
    return cfg


@pytest.fixture(scope="session")
def embedded_server():
    """One real vLLM server of the embedded SmolLM2-135M for the tests that need the real model (they share it:
    each start costs ~40 s on two cores). Tests point an ``embedded`` entry at it with ``model_cfg.api_base``."""
    from lbt_dspy.models import VLLMServer, checkpoint_path

    with VLLMServer(checkpoint_path(), kv_cache_gib=2) as server:
        yield server


def embedded_entry(server, **sample_cfg) -> dict:
    """An ``embedded`` model entry served by the shared `embedded_server`."""
    entry = {"model_type": "embedded", "model_cfg": {"api_base": server.api_base}}
    if sample_cfg:
        entry["sample_cfg"] = sample_cfg
    return entry
