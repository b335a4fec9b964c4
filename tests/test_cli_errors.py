"""Bad input: a one-line error naming the file, key or line; exit code 2; nothing overwritten."""

import json

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
    ({"num_rationales": "many"}, "expects int, got str ('many')"),
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
    assert code == 2 and "holds a different run (config key 'num_" in err
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
    ({"teacher_sample_cfg": {"temperature": "hot"}}, "teacher_sample_cfg.temperature: expected a number"),
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


# --- reliability, second round: reading never changes a run; every fault is one line ----------------------
def snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture
def finished_run(tmp_path, monkeypatch, fake_server, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    out = tmp_path / "run"
    cfg = write(tmp_path, fake_config(fake_server.api_base))
    assert main(["m1", str(cfg), "--output-path", str(out), "-q"]) == 0
    capsys.readouterr()
    return out, cfg


@pytest.mark.parametrize("stage, damage, needle", [
    ("teach", lambda lines: ["{garbage"] + lines[1:], "teach.jsonl:1: not valid JSON"),
    ("exam", lambda lines: lines[:3] + [""] + lines[3:], "exam.jsonl:4: a blank line"),
    ("exam", lambda lines: lines[:1] + [lines[1].replace('"score": ', '"scor": ')] + lines[2:],
     "exam.jsonl:2: record has no 'score'"),
    ("teach", lambda lines: lines[:-1] + [lines[-1].replace('"tp": ', '"tp": 3, "x": ')], "teach.jsonl:6: 'tp' is int"),
    ("exam", lambda lines: [lines[0].replace('"score": 1.0', '"score": NaN').replace('"score": 0.0', '"score": NaN')]
     + lines[1:], "exam.jsonl:1: not valid JSON (NaN is not a valid number"),
    ("greedy", lambda lines: lines + ["[]"], "greedy.jsonl:4: expected a JSON object"),
])
@pytest.mark.parametrize("command", ["select", "report", "m1", "m2"])
def test_hand_edited_records_are_one_line_errors_and_no_reader_changes_the_run(
        finished_run, capsys, tmp_path, stage, damage, needle, command):
    out, cfg = finished_run
    file = out / f"{stage}.jsonl"
    file.write_text("\n".join(damage(file.read_text().splitlines())) + "\n")
    before = snapshot(out)
    args = {"select": ["select", str(out)], "report": ["report", str(out)],
            "m1": ["m1", str(cfg), "--output-path", str(out), "-q"],  # resume's load
            "m2": ["m2", "pairs", str(out), "--output-path", str(tmp_path / "pairs")]}[command]
    code, err = run_cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1 and f"{out}/{needle}" in err, err
    assert "nan%" not in capsys.readouterr().out
    after = snapshot(out)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


def test_select_writes_nothing_into_the_run_and_o_writes_elsewhere(finished_run, capsys, tmp_path):
    out, _ = finished_run
    before = snapshot(out)
    assert main(["select", str(out)]) == 0
    assert snapshot(out) == before and not (out / "selection.json").exists()
    assert main(["select", str(out), "-o", str(tmp_path / "picks.json")]) == 0
    assert len(json.loads((tmp_path / "picks.json").read_text())) == 3 and snapshot(out) == before
    code, err = run_cli(capsys, "select", str(out), "-o", str(out / "picks.json"))
    assert code == 2 and "lbt select does not write into a run" in err and snapshot(out) == before


def test_a_torn_last_line_does_not_stop_readers_and_is_set_aside_by_the_rerun(finished_run, capsys):
    out, cfg = finished_run
    exam = out / "exam.jsonl"
    lines = exam.read_bytes().splitlines(keepends=True)
    exam.write_bytes(b"".join(lines[:-1]) + lines[-1][:20])  # killed mid-write
    before = snapshot(out)
    assert main(["select", str(out)]) == 0
    assert snapshot(out) == before
    assert main(["m1", str(cfg), "--output-path", str(out), "-q"]) == 0  # rewrites the lost record
    assert (out / "exam.jsonl.torn").read_bytes() == lines[-1][:20] + b"\n"
    assert exam.read_bytes() == b"".join(lines[:-1]) + lines[-1]


@pytest.mark.parametrize("text, needle", [
    ("num_pairs: [2\n", "config.yaml:2: the run's config.yaml is broken (invalid YAML"),
    ("just a string\n", "config.yaml: the run's config.yaml is not a mapping"),
])
def test_a_broken_config_yaml_in_a_run_dir(finished_run, capsys, text, needle):
    out, cfg = finished_run
    (out / "config.yaml").write_text(text)
    before = snapshot(out)
    for args in (["select", str(out)], ["report", str(out)], ["m1", str(cfg), "--output-path", str(out), "-q"]):
        code, err = run_cli(capsys, *args)
        assert code == 2 and len(err.splitlines()) == 1 and needle in err, (args, err)
    after = snapshot(out)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before


@pytest.mark.parametrize("change, needle", [
    ({"num_retries": -1}, "num_retries must be >= 0"),
    ({"teacher_sample_cfg": {"max_new_tokens": 0}}, "teacher_sample_cfg.max_new_tokens: must be >= 1, got 0"),
    ({"teacher_sample_cfg": {"temperature": -1}}, "teacher_sample_cfg.temperature: must be >= 0, got -1"),
    ({"general_student_sample_cfg": {"top_p": 1.5}}, "general_student_sample_cfg.top_p: must be in [0, 1]"),
    ({"general_student_sample_cfg": {"max_tokens": 2.5}}, "general_student_sample_cfg.max_tokens: expected an integer"),
    ({"student_model_cfgs": [{"model_type": "openai", "model_cfg": {"model": "x"}, "sample_cfg": {"top_k": -5}}]},
     "student_model_cfgs[0].sample_cfg.top_k: must be >= -1"),
    ({"greedy_sample_cfg": {"do_sample": "yes"}}, "greedy_sample_cfg.do_sample: expected true or false"),
])
def test_bad_values_are_refused_at_load_before_any_call_or_file(tmp_path, capsys, monkeypatch, change, needle):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = {**fake_config("http://127.0.0.1:9/v1"), **change}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg)), "--output-path", str(tmp_path / "out"))
    assert code == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "out").exists()


def test_disk_full_mid_run_is_one_line_with_a_rerun_hint_and_the_rerun_completes(
        tmp_path, capsys, monkeypatch, fake_server):
    """ENOSPC from the record write (a fault hook: the line is cut in half, as on a full disk)."""
    import os

    from lbt_dspy import store as store_mod

    monkeypatch.setenv("FAKE_API_KEY", "k")
    out = tmp_path / "run"
    cfg = write(tmp_path, fake_config(fake_server.api_base))
    writes = []

    def filling_up(fd, data):
        writes.append(data)
        return os.write(fd, data if len(writes) < 5 else data[:7])

    real_write = store_mod._write
    monkeypatch.setattr(store_mod, "_write", filling_up)
    code, err = run_cli(capsys, "m1", str(cfg), "--output-path", str(out), "-q")
    assert code == 1 and len(err.splitlines()) == 1, err
    assert "no space left on device" in err and "rerun the same command to resume" in err
    monkeypatch.setattr(store_mod, "_write", real_write)
    assert main(["m1", str(cfg), "--output-path", str(out), "-q"]) == 0
    assert len(list((out).glob("*.jsonl.torn"))) == 1
    assert sum(len(open(f).read().splitlines()) for f in out.glob("*.jsonl")) == 3 + 6 + 12


def test_a_read_only_output_directory_and_a_parent_that_is_a_file(tmp_path, capsys, monkeypatch):
    import errno

    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = write(tmp_path, fake_config("http://127.0.0.1:9/v1"))
    (tmp_path / "f").write_text("precious")
    code, err = run_cli(capsys, "m1", str(cfg), "--output-path", str(tmp_path / "f" / "run"))
    assert code == 2 and "a parent of this path is a file" in err and (tmp_path / "f").read_text() == "precious"

    from pathlib import Path

    real_mkdir = Path.mkdir

    def read_only(self, *a, **k):  # root ignores file modes: a read-only file system, by a fault hook
        if self.name == "ro-run":
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)

    monkeypatch.setattr(Path, "mkdir", read_only)
    code, err = run_cli(capsys, "m1", str(cfg), "--output-path", str(tmp_path / "ro-run"))
    assert code == 1 and len(err.splitlines()) == 1 and "ro-run: read-only file system" in err, err


def test_a_lone_surrogate_in_a_unique_id_does_not_crash_the_run_or_its_reruns(tmp_path, capsys, monkeypatch,
                                                                             fake_server):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    data = tmp_path / "tp.jsonl"
    data.write_text('{"question": "Ann has 2 pens. Ann buys 3 more pens. How many?", "answer": "5", '
                    '"unique_id": "bad\\ud800id"}\n'
                    '{"question": "Bo has 4 cups. Bo buys 1 more cups. How many?", "answer": "5", "unique_id": "ok"}\n')
    cfg = write(tmp_path, {**fake_config(fake_server.api_base), "dataset_type": "jsonl",
                           "dataset_cfg": {"teaching_file": str(data)}, "exam_maker_type": "fixed", "exam_maker_cfg": {}})
    out = tmp_path / "run"
    for _ in range(2):  # the run, then a rerun that reads what it wrote
        code = main(["m1", str(cfg), "--output-path", str(out), "-q"])
        assert code == 0, capsys.readouterr().err
    assert main(["select", str(out), "-o", str(tmp_path / "picks.json")]) == 0
    assert "bad\ud800id" in {p["tp"] for p in json.loads((tmp_path / "picks.json").read_text())}


def test_debug_shows_the_traceback_and_otherwise_none_reaches_the_user(tmp_path, capsys):
    code, err = run_cli(capsys, "select", str(tmp_path / "nope"))
    assert code == 2 and "Traceback" not in err and len(err.splitlines()) == 1
    code, err = run_cli(capsys, "--debug", "select", str(tmp_path / "nope"))
    assert code == 2 and "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("lbt: error:")
    code, err = run_cli(capsys, "select", str(tmp_path / "nope"), "--debug")  # anywhere on the line
    assert "Traceback" in err


def test_an_unexpected_exception_is_one_line_too(tmp_path, capsys, monkeypatch):
    import lbt_dspy.cli as cli

    def boom(*a, **k):
        raise RuntimeError("something\nbroke")

    monkeypatch.setattr(cli, "_run", boom)
    code, err = run_cli(capsys, "select", str(tmp_path))
    assert code == 1 and err == ("lbt: error: internal error: RuntimeError: something broke "
                                 "(rerun with --debug for the traceback, and report it)")


def test_files_that_are_not_utf8_are_one_line_errors_naming_them(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    bad_cfg = tmp_path / "cfg.yaml"
    bad_cfg.write_bytes(b"num_pairs: \xff\xfe\n")
    code, err = run_cli(capsys, "m1", str(bad_cfg), "--output-path", str(tmp_path / "out"))
    assert code == 2 and f"{bad_cfg}: not UTF-8 text" in err
    data = tmp_path / "tp.jsonl"
    data.write_bytes(b'{"question": "1+1?", "answer": "2"}\n{"question": "\xff", "answer": "1"}\n')
    cfg = {**fake_config("http://127.0.0.1:9/v1"), "dataset_type": "jsonl", "dataset_cfg": {"teaching_file": str(data)},
           "exam_maker_type": "fixed", "exam_maker_cfg": {}}
    code, err = run_cli(capsys, "m1", str(write(tmp_path, cfg, "ok.yaml")), "--output-path", str(tmp_path / "out"))
    assert code == 2 and f"{data}:2: not UTF-8 text" in err and len(err.splitlines()) == 1


def test_a_resume_checks_every_stage_before_it_adds_a_record(finished_run, capsys):
    """A bad exam line stops a rerun before its greedy stage makes (and records) the call it still needs."""
    out, cfg = finished_run
    greedy = out / "greedy.jsonl"
    greedy.write_text("".join(greedy.read_text().splitlines(keepends=True)[:-1]))  # one greedy call to redo
    exam = out / "exam.jsonl"
    exam.write_text("{oops\n" + exam.read_text())
    before = snapshot(out)
    code, err = run_cli(capsys, "m1", str(cfg), "--output-path", str(out), "-q")
    assert code == 2 and f"{exam}:1: not valid JSON" in err
    after = snapshot(out)
    after.pop(".lock", None), before.pop(".lock", None)
    assert after == before
