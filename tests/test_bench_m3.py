"""eval/bench_m3.py end to end against the scripted OpenAI-compatible server (tiny sizes)."""

import json
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))


def test_bench_runs_counts_calls_and_writes_table_and_png(fake_server, tmp_path, monkeypatch):
    import bench_m3

    monkeypatch.setenv("FAKE_API_KEY", "x")
    model = {"model_type": "openai", "model_cfg": {"model": "fake", "api_base": fake_server.api_base,
                                                   "api_key_env": "FAKE_API_KEY"}}
    cfg = {"teacher_model_cfg": model, "task_model_cfg": model, "student_model_cfgs": [model], "train_size": 16,
           "val_size": 8, "test_size": 12, "budget": 60, "tasks": ["liar"], "concurrency": 2, "num_retries": 0,
           "methods": ["zero-shot", "majority", "LabeledFewShot", "BootstrapFewShotWithRandomSearch", "COPRO", "LbT"]}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert bench_m3.main([str(path), "--out", str(out)]) == 0
    rows = {r["method"]: r for r in json.loads((out / "bench_m3.json").read_text())["rows"]}
    assert list(rows) == cfg["methods"]
    assert rows["majority"]["calls"] == 0 and rows["LabeledFewShot"]["optimizer_calls"] == 0
    assert rows["zero-shot"]["calls"] == rows["zero-shot"]["test"] == 12  # one counter sees every call
    assert 0 < rows["LbT"]["optimizer_calls"] <= 60 and rows["LbT"]["calls"] == rows["LbT"]["optimizer_calls"] + 12
    assert 0 < rows["BootstrapFewShotWithRandomSearch"]["optimizer_calls"] <= 80
    for r in rows.values():
        if "error" not in r:
            assert r["accuracy_ci"][0] <= r["accuracy"] <= r["accuracy_ci"][1]
            assert r["f1_ci"][0] <= r["f1"] <= r["f1_ci"][1]
    # The scripted teacher does not answer in DSPy's chat format: COPRO's failure is a row, not a crash.
    assert "error" in rows["COPRO"]
    md = (out / "bench_m3.md").read_text()
    assert "| liar | LbT |" in md and "| liar | COPRO | failed |" in md and "budget 60" in md
    assert (out / "bench_m3.png").stat().st_size > 1000
    # LbT against every finished method, paired over the same test items; a failed method is not compared
    for other in ("zero-shot", "majority", "LabeledFewShot", "BootstrapFewShotWithRandomSearch"):
        assert f"| liar | LbT − {other} |" in md
    assert "LbT − COPRO" not in md
    line = next(x for x in md.splitlines() if x.startswith("| liar | LbT − majority |"))
    a, b = rows["LbT"], rows["majority"]
    wins = sum(p == y and q != y for p, q, y in zip(a["preds"], b["preds"], _labels(cfg)))
    assert f"| {wins} / " in line

    # --report rewrites the table from bench_m3.json alone: the same comparisons, no LM call
    served = len(fake_server.requests)
    (out / "bench_m3.md").unlink()
    assert bench_m3.main([str(path), "--out", str(out), "--report"]) == 0
    assert len(fake_server.requests) == served
    again = (out / "bench_m3.md").read_text()
    assert again.split("## Paired comparisons")[1] == md.split("## Paired comparisons")[1]
    assert f"`python eval/bench_m3.py {path} --out {out}`" in again  # the command that made the rows


def _labels(cfg):
    import bench_m3
    from lbt_dspy.config import dataclass_from_dict

    _, fields, _, _, test = bench_m3.load_split("liar", dataclass_from_dict(bench_m3.BenchM3Config, cfg, "cfg"))
    return [e[fields.output] for e in test]


def test_bad_config_is_one_line_and_exit_2(tmp_path, capsys):
    import bench_m3

    path = tmp_path / "bad.yaml"
    path.write_text("methods: [MIPRO]\n")
    assert bench_m3.main([str(path), "--out", str(tmp_path / "o")]) == 2
    assert "unknown method 'MIPRO'" in capsys.readouterr().err


def test_resume_keeps_finished_rows(fake_server, tmp_path, monkeypatch):
    import bench_m3

    monkeypatch.setenv("FAKE_API_KEY", "x")
    model = {"model_type": "openai", "model_cfg": {"model": "fake", "api_base": fake_server.api_base,
                                                   "api_key_env": "FAKE_API_KEY"}}
    cfg = {"teacher_model_cfg": model, "task_model_cfg": model, "student_model_cfgs": [model], "train_size": 8,
           "val_size": 4, "test_size": 6, "budget": 30, "tasks": ["liar"], "methods": ["zero-shot", "LbT"],
           "concurrency": 2, "num_retries": 0}
    path = tmp_path / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    out = tmp_path / "out"
    assert bench_m3.main([str(path), "--out", str(out)]) == 0
    first = json.loads((out / "bench_m3.json").read_text())["rows"]
    served = len(fake_server.requests)
    assert bench_m3.main([str(path), "--out", str(out), "--resume"]) == 0
    assert len(fake_server.requests) == served  # nothing asked again
    assert json.loads((out / "bench_m3.json").read_text())["rows"] == first
    cfg["budget"] = 31
    path.write_text(yaml.safe_dump(cfg))
    assert bench_m3.main([str(path), "--out", str(out), "--resume"]) == 2  # another config: refused
