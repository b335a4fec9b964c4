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
