"""One CLI grammar: every command that reads a config takes CFG --set KEY=VALUE (nested keys) and -q, and
`lbt report DIR` / `lbt select DIR` work on M1, M2 eval and M3 run directories alike."""

import json
import re

import yaml
from conftest import fake_config, m3_config

from lbt_dspy.cli import _parser, main


def _subparsers(parser):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def test_every_config_command_takes_set_and_quiet():
    top = dict(_subparsers(_parser()))
    commands = {"exam": top["exam"], "m1": top["m1"], "m3": top["m3"]}
    commands.update({f"m2 {k}": v for k, v in _subparsers(top["m2"]) if k in ("train", "eval")})
    for name, p in commands.items():
        flags = {s for a in p._actions for s in a.option_strings}
        assert {"--set", "-q"} <= flags, name
    for name in ("select", "report", "serve"):
        assert "-q" in {s for a in top[name]._actions for s in a.option_strings}, name


def _files(run):
    return {p: p.stat().st_mtime_ns for p in run.rglob("*") if p.is_file()}


def test_m1_set_nested_keys_then_report_and_select(tmp_path, fake_server, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = tmp_path / "m1.yaml"
    cfg.write_text(yaml.safe_dump(fake_config(fake_server.api_base)))
    run = tmp_path / "run"
    assert main(["m1", str(cfg), "--output-path", str(run), "-q", "--set", "dataset_cfg.num_families=2",
                 "--set", "num_rationales=2"]) == 0
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["dataset_cfg"] == {"num_families": 2, "num_variants": 2, "seed": 1}
    capsys.readouterr()
    before = _files(run)
    assert main(["select", str(run)]) == 0
    printed = capsys.readouterr().out
    assert _files(run) == before  # a reader writes nothing
    # what a user compares is printed with its uncertainty: intervals in the cells, the paired differences
    sum_row = next(line for line in printed.splitlines() if line.startswith("| M1 SUM |"))
    assert re.search(r"\d+\.\d% \[\d+\.\d, \d+\.\d\]", sum_row), sum_row
    assert "| M1 SUM − SC |" in printed and "95% paired CI" in printed
    assert main(["report", str(run)]) == 0
    reported = capsys.readouterr().out
    assert "report:" in reported and (run / "report.md").is_file()
    assert printed in reported  # the same tables as select, computed from the same records
    assert main(["m1", str(cfg), "--set", "dataset_cfg.num_families"]) == 2  # no '=': one line, exit 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_m3_run_then_lbt_report_and_select(tmp_path, fake_server, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = m3_config(tmp_path, fake_server.api_base)
    path = tmp_path / "m3.yaml"
    path.write_text(yaml.safe_dump(cfg))
    run = tmp_path / "m3run"
    assert main(["m3", str(path), "--output-path", str(run), "-q", "--set", "rounds=1"]) == 0
    assert yaml.safe_load((run / "config.yaml").read_text())["rounds"] == 1
    capsys.readouterr()
    before = _files(run)
    assert main(["select", str(run)]) == 0
    table = capsys.readouterr().out
    assert "LbT" in table and _files(run) == before
    assert main(["report", str(run)]) == 0
    assert table in capsys.readouterr().out  # the same table, and report.md
    assert main(["m3", "--report", str(run)]) == 0  # the old spelling still works
    assert main(["report", str(run), "--a6-pairs", "4"]) == 2  # M1-only flags are refused, one line
    assert "apply to M1 runs" in capsys.readouterr().err


def test_m2_eval_then_lbt_report_and_select(tmp_path, fake_server, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    cfg = tmp_path / "m1.yaml"
    cfg.write_text(yaml.safe_dump(fake_config(fake_server.api_base)))
    out = tmp_path / "eval"
    assert main(["m2", "eval", str(cfg), "--output-path", str(out), "-q", "--set", "dataset_cfg.num_families=2"]) == 0
    printed = capsys.readouterr().out
    assert "LM calls this run: 2 (greedy (base) 2)" in printed  # 2 teaching problems, one greedy call each
    summary = json.loads((out / "eval_summary.json").read_text())
    assert summary["num_problems"] == 2 and summary["calls"]["total"] == 2
    line = json.loads((out / "base" / "greedy.jsonl").read_text().splitlines()[0])
    rec = line.get("record", line)
    assert "score" in rec and "reference" in rec
    before = _files(out)
    assert main(["select", str(out)]) == 0
    assert "greedy accuracy" in capsys.readouterr().out and _files(out) == before
    from lbt_dspy.m2.evaluate import summarize_eval_dir

    again = summarize_eval_dir(out)  # recomputed from the records: the same numbers the run wrote
    assert again["rows"] == summary["rows"] and again["comparisons"] == summary["comparisons"]
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0
    assert (out / "report.md").is_file()


def test_report_on_a_directory_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "not a run directory" in err
    assert main(["select", str(tmp_path / "nope")]) == 2
    assert "no such run directory" in capsys.readouterr().err
