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
