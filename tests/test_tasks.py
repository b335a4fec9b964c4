"""Tasks as plug-ins: the config's task (or its scorer) decides the defaults, the M1 methods and the report."""

import json
from pathlib import Path

import pytest
import yaml
from conftest import fake_config

from lbt_dspy.config import M1Config
from lbt_dspy.errors import LbtError
from lbt_dspy.results import CodeScore
from lbt_dspy.tasks import CodeTask, MathTask, task_for, tasks

ROOT = Path(__file__).resolve().parent.parent


def test_task_inferred_from_the_scorer_and_named_by_the_config():
    assert isinstance(task_for(M1Config()), MathTask)
    assert isinstance(task_for(M1Config(exam_scorer_type="code", dataset_type="humaneval")), CodeTask)
    assert task_for({"task": "classification"}).command == "m3"
    for name in ("humaneval_embedded", "humaneval", "demo", "math181_paper"):
        cfg = M1Config.from_yaml(ROOT / "configs" / f"{name}.yaml")
        assert task_for(cfg).name == ("code" if "humaneval" in name else "math"), name


def test_a_named_task_fills_its_loader_scorer_and_exam_maker():
    cfg = M1Config.from_dict({"task": "code"})
    assert (cfg.dataset_type, cfg.exam_scorer_type, cfg.exam_maker_type) == ("humaneval", "code", "similar")
    assert cfg.to_dict()["task"] == "code"
    assert "task" not in M1Config().to_dict()  # runs saved before the key still resume
    kept = M1Config.from_dict({"task": "code", "dataset_type": "leetcode", "dataset_cfg": {"path": "x"}})
    assert kept.dataset_type == "leetcode"  # what the config says wins


@pytest.mark.parametrize("raw, needle", [
    ({"task": "cod"}, "task: unknown type 'cod' (did you mean 'code'?)"),
    ({"task": "code", "exam_scorer_type": "math"}, "key 'task': code runs score with exam_scorer_type 'code'"),
    ({"task": "classification"}, "`lbt m3` runs"),
])
def test_bad_tasks_are_one_line(raw, needle):
    with pytest.raises(LbtError) as info:
        M1Config.from_dict(raw, "c.yaml")
    assert needle in str(info.value) and str(info.value).startswith("c.yaml: ")


def test_each_task_bundles_its_methods():
    math, code = tasks.get("math")(), tasks.get("code")()
    assert math.vote and math.m1_method("M1 SUM") == "M1 SUM" and "SC" in math.methods
    assert not code.vote and code.m1_method("M1 SUM") == "M1 MAX" and code.tie_break == "v_score"
    assert "SC" not in code.methods and "M1 SUM" not in code.methods


def test_m1_module_of_a_code_config_is_never_voted(fake_server, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    from lbt_dspy.components import build_components, build_m1
    from lbt_dspy.models import ModelPool

    cfg = M1Config.from_dict(fake_config(fake_server.api_base, task="code", dataset_type="humaneval",
                                          dataset_cfg={"limit": 2}, exam_maker_type="similar",
                                          exam_maker_cfg={"num_exam_questions": 1, "num_repetitions": 1}))
    with ModelPool(cache=False, num_retries=0) as pool:
        m1 = build_m1(cfg, pool, build_components(cfg))
        assert (m1.method, m1.vote, m1.tie_break) == ("M1 MAX", False, "v_score")
        math_cfg = M1Config.from_dict(fake_config(fake_server.api_base))
        assert build_m1(math_cfg, pool, build_components(math_cfg)).vote is True


def test_a_code_run_reports_no_voted_methods(fake_server, tmp_path, monkeypatch, capsys):
    from lbt_dspy.cli import main
    from lbt_dspy.m1.results import summarize

    monkeypatch.setenv("FAKE_API_KEY", "k")
    emb = yaml.safe_load((ROOT / "configs" / "humaneval_embedded.yaml").read_text())
    raw = fake_config(fake_server.api_base, task="code", dataset_cfg={"limit": 2}, num_pairs=2,
                      exam_maker_cfg={"num_exam_questions": 1, "num_repetitions": 1},
                      exam_prompter_cfg=emb["exam_prompter_cfg"], greedy_sample_cfg={"do_sample": False})
    raw = {k: v for k, v in raw.items() if k not in ("dataset_type", "exam_maker_type")}  # the task's defaults
    cfg = tmp_path / "code.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["m1", str(cfg), "--output-path", str(run), "-q"]) == 0
    summary = summarize(run)
    assert summary["code"] is not None and not {"SC", "M1 SUM"} & set(summary["table"])
    rows = [CodeScore.from_dict(r) for r in json.loads(json.dumps(summary["code"]["rows"]))]
    assert [r.label() for r in rows[:3]] == ["Greedy", "Avg.", "Avg. (V=1)"]
    assert "mean S-score" in capsys.readouterr().out
