"""The seed's 22 configs (tests/fixtures/seed/config, copied verbatim; MIT, see NOTICE.md) run with `lbt exam`
as the seed's README runs scripts/exam.py, against the scripted server; the requests lbt sends equal the
seed's (tests/fixtures/seed/expected_prompts.json, rendered by the seed's own ExamPrompter and model classes:
see make_seed_outputs.py); its output has the seed's columns and nesting; code answers are scored against
the problem's tests."""

import json
import sys
from pathlib import Path

import pytest
import yaml

from lbt_dspy.cli import main

SEED = Path(__file__).parent / "fixtures" / "seed"
sys.path.insert(0, str(SEED))
import scripted  # noqa: E402

CONFIGS = sorted(f"{p.parent.name}/{p.name}" for p in (SEED / "config").glob("*/*.yaml"))
EXPECTED = json.loads((SEED / "expected_prompts.json").read_text())
SEED_COLUMNS = ["teaching_items", "exam_questions", "exam_gt_rationales", "exam_gt_answers", "exam_details", "scores"]


def test_all_22_seed_configs_are_here():
    assert len(CONFIGS) == 22 and set(CONFIGS) == set(EXPECTED)


@pytest.fixture
def smollm2_dir():
    from lbt_dspy.models.embedded import checkpoint_path

    return str(checkpoint_path())  # a local checkpoint: its tokenizer renders the huggingface prompts


def run_seed_config(rel, tmp_path, fake_server, monkeypatch, hf_path, over=None, out_name="out"):
    """`lbt exam CFG --output-path OUT [--teaching-dataset-file T] --exam-dataset-file E` with the config as the
    seed ships it; only where the model is changes: Azure from AZURE_OPENAI_ENDPOINT/KEY (as in the seed),
    huggingface entries get a local `path` (and, here, the scripted server as the one already serving it)."""
    import fake_openai

    monkeypatch.setattr(fake_openai, "scripted_answer", scripted.scripted_answer)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake_server.api_base.removesuffix("/v1"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "test-key")
    cfg = yaml.safe_load((SEED / "config" / rel).read_text())
    for entry in cfg["student_model_cfgs"]:
        if entry["model_type"] == "huggingface":
            entry["model_cfg"].update(path=hf_path, api_base=fake_server.api_base)
    cfg.update(over or {})
    cfg_file = tmp_path / Path(rel).name
    cfg_file.write_text(yaml.safe_dump(cfg))
    teaching, bank = scripted.exam_datasets(cfg)
    scripted.save(bank, tmp_path / "bank")
    args = ["exam", str(cfg_file), "--output-path", str(tmp_path / out_name), "--exam-dataset-file", str(tmp_path / "bank")]
    if teaching:
        scripted.save(teaching, tmp_path / "teaching")
        args += ["--teaching-dataset-file", str(tmp_path / "teaching")]
    assert main(args + ["-q"]) == 0
    return cfg, tmp_path / out_name


def _without_duplicated_demos(messages):
    """The seed's fastchat path (its API models) appends multi-round demo turns twice; lbt sends them once."""
    n_tail = 2 if messages[-1]["role"] == "assistant" else 1  # the exam turn (and its prefill)
    system, turns, tail = messages[0], messages[1:-n_tail], messages[-n_tail:]
    half = len(turns) // 2
    if half and turns[:half] == turns[half:]:
        turns = turns[:half]
    return [system, *turns, *tail]


def _sent(fake_server):
    out = []
    for r in fake_server.requests:
        body = r["body"]
        out.append(body["prompt"] if "prompt" in body else json.dumps(body["messages"], sort_keys=True))
    return out


@pytest.mark.parametrize("rel", CONFIGS)
def test_seed_config_runs_sends_the_seed_prompts_and_writes_the_seed_output(rel, tmp_path, fake_server, monkeypatch,
                                                                            smollm2_dir):
    from datasets import load_from_disk

    cfg, out = run_seed_config(rel, tmp_path, fake_server, monkeypatch, smollm2_dir)
    hf = cfg["student_model_cfgs"][0]["model_type"] == "huggingface"
    expected = EXPECTED[rel]
    if hf:  # the chat template of `path` + the prefill, continued on /v1/completions (the seed's HFModel prompt)
        want = {e["rendered"] for e in expected}
        assert all(r["path"].endswith("/completions") for r in fake_server.requests)
    else:  # Azure chat messages: system, demos, instruction + exam, prefill as a trailing assistant message
        want = {json.dumps(_without_duplicated_demos(e["messages"]), sort_keys=True) for e in expected}
    # identical greedy prompts are answered once (DSPy's cache), so compare the distinct requests
    got = set(_sent(fake_server))
    assert got == want, _debug_diff(got, want)

    ds = load_from_disk(str(out))
    code = cfg["exam_scorer_type"] == "code"
    columns = SEED_COLUMNS[:4] + (["task_id"] if code else []) + SEED_COLUMNS[4:]
    assert ds.column_names == columns
    assert all((out / f).is_file() for f in ("dataset.csv", "dataset.json", "config.yaml"))
    rows = ds.to_list()
    assert sum(len(r["exam_questions"]) for r in rows) == len(expected)  # the seed's exams, question for question
    name = cfg["student_model_cfgs"][0]["model_cfg"].get("name") or (
        smollm2_dir if hf else "azure_" + cfg["student_model_cfgs"][0]["model_cfg"]["model"])
    by_id = {r["task_id"]: r for r in scripted.CODE_BANK}
    for row in rows:
        details = row["exam_details"][name]
        assert len(details["rationales"]) == len(row["exam_questions"]) and all(len(x) == 1 for x in details["scores"])
        for q, (texts, scores) in enumerate(zip(details["rationales"], details["scores"])):
            text, score = texts[0], scores[0]
            assert "[[Final " in text  # the whole generated text, not cut before the answer
            if code:  # scored against the problem's tests: the right program 1, the wrong one 0
                right = by_id[row["task_id"][q]]["answer"] in text
                assert score == (1.0 if right else 0.0), (row["task_id"][q], text)
        flat = [s for qs in details["scores"] for s in qs]
        assert row["scores"][name] == pytest.approx(sum(flat) / len(flat))


def _debug_diff(got, want):  # pragma: no cover - a readable failure
    import difflib

    for g in sorted(got - want)[:1]:
        w = min(want - got, key=lambda w: -difflib.SequenceMatcher(None, g, w).ratio(), default="")
        return "\n".join(difflib.unified_diff(w.split("\\n"), g.split("\\n"), "seed", "lbt", lineterm="", n=1))
    return ""
