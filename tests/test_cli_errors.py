"""Bad input: a one-line error naming the file, key or line; exit code 2; nothing overwritten."""

import pytest
import yaml
from conftest import fake_config

from lbt_dspy.cli import main


def run_cli(capsys, *args):
    code = main(list(args))
    err = capsys.readouterr().err.strip()
    return code, err


def write(tmp_path, cfg, name="cfg.yaml"):
    p = tmp_path / name
    p.write_text(yaml.safe_dump(cfg) if isinstance(cfg, dict) else cfg)
    return p


@pytest.mark.parametrize("change, needle", [
    ({"num_rationale": 4}, "unknown key 'num_rationale' (did you mean 'num_rationales'?)"),
    ({"num_rationales": "many"}, "key 'num_rationales' expects int"),
    ({"exam_maker_type": "funct"}, "exam_maker_type: unknown type 'funct' (did you mean 'func'?)"),
    ({"exam_maker_cfg": {"num_exam_question": 3}}, "exam_maker_cfg.num_exam_question: unknown key"),
    ({"exam_maker_cfg": {"num_exam_questions": 5, "num_repetitions": 1}}, "num_exam_questions: 5 asked"),
    ({"dataset_type": "jsonl", "dataset_cfg": {"teaching_file": "/nonexistent/tp.jsonl"}}, "/nonexistent/tp.jsonl: no such file"),
    ({"student_model_cfgs": []}, "student_model_cfgs is empty"),
    ({"general_student_sample_cfg": {"temprature": 0.7}}, "unknown sampling key (did you mean 'temperature'?)"),
    ({"teacher_model_cfg": {"model_type": "opneai"}}, "model_type: unknown type 'opneai' (did you mean 'openai'?)"),
])
def test_bad_config_one_line_exit_2(tmp_path, capsys, monkeypatch, change, needle):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = {**fake_config("http://127.0.0.1:9/v1"), **change}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "out"))
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err, err


def test_missing_config_file(tmp_path, capsys):
    code, err = run_cli(capsys, "m1", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: no such config file" in err


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    code, err = run_cli(capsys, "m1", str(write(tmp_path, "a: 1\nb: [1, 2\nc: 3\n")))
    assert code == 2 and "cfg.yaml:" in err and "invalid YAML" in err


def test_bad_jsonl_line_is_reported_with_its_number(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    data = tmp_path / "tp.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{not json}\n')
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "dataset_type": "jsonl", "dataset_cfg": {"teaching_file": str(data)},
           "exam_maker_type": "fixed", "exam_maker_cfg": {}}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "out"))
    assert code == 2 and f"{data}:2: not valid JSON" in err


def test_empty_dataset(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    data = tmp_path / "tp.jsonl"
    data.write_text("\n")
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "dataset_type": "jsonl", "dataset_cfg": {"teaching_file": str(data)}}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "out"))
    assert code == 2 and "empty dataset" in err


def test_missing_api_key_env(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("FAKE_API_KEY", raising=False)
    code, err = run_cli(capsys, "m1", str(write(tmp_path, fake_config("http://127.0.0.1:9/v1"))),
                        "--output-path", str(tmp_path / "out"))
    assert code == 2 and "FAKE_API_KEY is not set" in err


def test_output_path_of_a_different_run_is_refused_and_kept(tmp_path, capsys, monkeypatch, fake_server):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    out = tmp_path / "out"
    assert main(["m1", str(write(tmp_path, fake_config(fake_server.api_base))), "--output-path", str(out), "-q"]) == 0
    capsys.readouterr()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    other = write(tmp_path, fake_config(fake_server.api_base, num_rationales=3), "other.yaml")
    code, err = run_cli(capsys, "m1", str(other), "--output-path", str(out))
    assert code == 2 and "holds a different run (config key 'num_rationales' differs)" in err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_select_on_a_non_run_directory(tmp_path, capsys):
    code, err = run_cli(capsys, "select", str(tmp_path))
    assert code == 2 and "not a run directory" in err


def test_failed_calls_are_not_recorded_and_exit_nonzero(tmp_path, capsys, monkeypatch):
    from fake_openai import FakeOpenAI

    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(faults=[500] * 3) as srv:  # the first three calls fail (no retries in this config)
        out = tmp_path / "out"
        cfg = write(tmp_path, fake_config(srv.api_base, concurrency=1))
        assert main(["m1", str(cfg), "--output-path", str(out), "-q"]) == 1
        assert "3 call(s) failed after 1 attempt(s) each" in capsys.readouterr().err
        lines = (out / "greedy.jsonl").read_text().splitlines() if (out / "greedy.jsonl").exists() else []
        assert len(lines) == 0  # the 3 greedy calls failed: nothing recorded for them
        assert main(["m1", str(cfg), "--output-path", str(out), "-q"]) == 0  # the server recovered: resume
        assert len((out / "greedy.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize("change, needle", [
    ({"dataset_cfg": "arith"}, "key 'dataset_cfg' expects dict"),
    ({"num_rationales": 0}, "num_rationales must be >= 1"),
    ({"concurrency": True}, "key 'concurrency' expects int, got bool"),
    ({"teacher_model_cfg": {"model_type": "openai", "model_cfg": {"model": "x", "api_bsae": "y"}}},
     "teacher_model_cfg.model_cfg.api_bsae: unknown key (did you mean 'api_base'?)"),
    ({"teacher_model_cfg": {"model_type": "openai", "model_cfg": {"model": "x"}, "sampel_cfg": {}}},
     "teacher_model_cfg.sampel_cfg: unknown key (did you mean 'sample_cfg'?)"),
    ({"teacher_sample_cfg": {"temperature": "hot"}}, "teacher_model_cfg.sample_cfg.temperature: expected a number"),
    ({"exam_scorer_type": "maths"}, "exam_scorer_type: unknown type 'maths' (did you mean 'math'?)"),
    ({"dataset_type": "arith", "dataset_cfg": {"num_famillies": 3}}, "dataset_cfg.num_famillies: unknown key"),
])
def test_more_bad_configs(tmp_path, capsys, monkeypatch, change, needle):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = {**fake_config("http://127.0.0.1:9/v1"), **change}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "out"))
    assert code == 2
    assert len(err.splitlines()) == 1 and needle in err, err


def test_output_path_that_is_a_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    target = tmp_path / "results.txt"
    target.write_text("precious")
    code, err = run_cli(capsys, "m1", str(write(tmp_path, fake_config("http://127.0.0.1:9/v1"))), "--output-path",
                        str(target))
    assert code == 2 and "not a directory" in err and target.read_text() == "precious"


def _exam_files(tmp_path):
    tp = tmp_path / "tp.jsonl"
    tp.write_text('{"question": "Ann has 2 pens. Ann buys 3 more pens.", "rationale": "2+3=5", "answer": "5"}\n')
    ep = tmp_path / "ep.jsonl"
    ep.write_text('{"question": "Bo has 4 cups. Bo buys 1 more cups.", "answer": "5"}\n')
    return tp, ep


def test_exam_plan_index_out_of_range(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    tp, ep = _exam_files(tmp_path)
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "teaching_plans": [[0], [3]], "exam_maker_type": "fixed",
           "exam_maker_cfg": {}}
    code, err = run_cli(capsys, "exam", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "o"),
                        "--teaching-dataset-file", str(tp), "--exam-dataset-file", str(ep))
    assert code == 2 and "teaching_plans[1]: index 3 out of range" in err


def test_exam_missing_exam_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "exam_maker_type": "fixed", "exam_maker_cfg": {}}
    code, err = run_cli(capsys, "exam", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "o"),
                        "--exam-dataset-file", str(tmp_path / "missing.jsonl"))
    assert code == 2 and "missing.jsonl: no such file" in err


def test_exam_plans_need_a_teaching_file(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    _, ep = _exam_files(tmp_path)
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "exam_maker_type": "fixed", "exam_maker_cfg": {}}
    code, err = run_cli(capsys, "exam", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "o"),
                        "--exam-dataset-file", str(ep))
    assert code == 2 and "need --teaching-dataset-file" in err


def test_exam_runs_the_seed_way(tmp_path, capsys, monkeypatch, fake_server):
    """`lbt exam` with the seed's flags: one exam per plan, a dataset row per plan with scores."""
    import json

    monkeypatch.setenv("FAKE_API_KEY", "k")
    tp, ep = _exam_files(tmp_path)
    cfg = {**fake_config(fake_server.api_base), "teaching_plans": [[0], ["question-only", 0]],
           "exam_maker_type": "fixed", "exam_maker_cfg": {}}
    out = tmp_path / "o"
    assert main(["exam", str(write(tmp_path, cfg)), "--output-path", str(out), "--teaching-dataset-file", str(tp),
                 "--exam-dataset-file", str(ep), "-q"]) == 0
    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 2 and rows[0]["exam_gt_answers"] == ["5"]
    # the last user turn (the prefill follows as a trailing assistant message, as the seed sends it)
    student_prompts = [[m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"] for r in fake_server.requests]
    assert "2+3=5" in student_prompts[0] or "2+3=5" in student_prompts[1]  # plan 0 shows the TR
    assert sum("2+3=5" in p for p in student_prompts) == 1  # the question-only plan does not
    assert all(isinstance(r["scores"]["fake-student"], float) for r in rows)
