"""Seed keys and features, one by one: the seed's exam makers and their keys, recall_mode, per-model
num_return_sequences, model_type huggingface (server choice, pt_path, a path not on disk), and a one-line
error (exit 2, no traceback) for each seed feature lbt does not provide."""

import sys
from pathlib import Path

import pytest
import yaml

from lbt_dspy.cli import main
from lbt_dspy.errors import LbtError
from lbt_dspy.exam.makers import FunctionalExamMaker, allocate, parse_selected_indexes
from lbt_dspy.exam.seed_makers import CodeFixedExamMaker, CodeMetaInfoExamMaker, MathMetaInfoExamMaker
from lbt_dspy.exam.similar import QuesSimilarityExamMaker
from lbt_dspy.scoring.math import MathScorer

SEED = Path(__file__).parent / "fixtures" / "seed"
sys.path.insert(0, str(SEED))
import scripted  # noqa: E402

MATH_BANK = [{"question": f"q{i}", "answer": "1", "subject": s, "level": lv}
             for i, (s, lv) in enumerate([("Algebra", 1), ("Algebra", 2), ("Algebra", 3), ("Geometry", 2),
                                          ("Algebra", "Level 2"), ("Algebra", 5)])]


# --- exam makers ---------------------------------------------------------------------------------------
def test_allocate_and_selected_indexes_follow_the_seed():
    assert allocate(1, 3) == [3] and allocate(2, 5) == [3, 2] and allocate(3, 2) == [1, 1, 0]
    assert parse_selected_indexes("range(0, 3)", 5) == [0, 1, 2]
    assert parse_selected_indexes("range(1, 5, 2)", 5) == [1, 3]
    assert parse_selected_indexes("[4, 0]", 5) == [4, 0] and parse_selected_indexes(None, 5) is None
    for bad, msg in (("range(0, 9)", "out of range"), ("__import__('os')", "neither"), ("[1, 'a']", "expected"),
                     (3, "expected")):
        with pytest.raises(LbtError, match=msg):
            parse_selected_indexes(bad, 5)
    assert [q["answer"] for q in FunctionalExamMaker([{"unique_id": "a", "question": "x", "answer": str(i)}
                                                      for i in range(4)], 2, 1, "range(1, 3)")
            .make_exam_questions([{"unique_id": "a"}])] == ["1", "2"]


def test_math_metainfo_subject_and_level_controls():
    tp = {"question": "t", "subject": "Algebra", "level": 2}
    q = lambda **kw: [r["question"] for r in MathMetaInfoExamMaker(MATH_BANK, **kw).make_exam_questions([tp])]  # noqa
    assert q(num_exam_questions=5) == ["q1", "q4"]  # same subject, same level ("Level 2" read as 2)
    assert q(level_controls=[">"], num_exam_questions=5) == ["q2", "q5"]
    assert q(level_controls=["<"], num_exam_questions=5) == ["q0"]  # the seed's "<" matched nothing (a typo)
    assert q(level_controls=[5, "="], num_exam_questions=1) == ["q1"]  # the first matches
    assert q(level_controls=[], same_subject=False, num_exam_questions=2) == ["q0", "q1"]
    picked = q(level_controls=[], num_exam_questions=3, random=True)
    assert len(picked) == 3 and picked == q(level_controls=[], num_exam_questions=3, random=True)  # seeded
    with pytest.raises(LbtError, match="level_controls"):
        MathMetaInfoExamMaker(MATH_BANK, level_controls=["~"])
    with pytest.raises(LbtError, match="'level'"):
        MathMetaInfoExamMaker([{"question": "x", "subject": "A"}])
    with pytest.raises(LbtError, match="no demo"):
        MathMetaInfoExamMaker(MATH_BANK).make_exam_questions([])


def test_math_metainfo_shares_the_exam_among_teaching_items_and_warns_when_short(caplog):
    items = [{"question": "a", "subject": "Algebra", "level": 2}, {"question": "b", "subject": "Geometry", "level": 2}]
    exam = MathMetaInfoExamMaker(MATH_BANK, num_exam_questions=4).make_exam_questions(items)
    assert [r["question"] for r in exam] == ["q1", "q4", "q3"]  # 2 + 2 asked, Geometry has only one
    assert "fewer than the 2 asked" in caplog.text


def test_code_metainfo_keeps_the_teaching_problem_and_code_fixed_exam_is_it():
    bank = scripted.code_bank()
    exam = CodeMetaInfoExamMaker(bank, num_exam_questions=300).make_exam_questions([{"tags": "Binary Search"}])
    assert [r["task_id"] for r in exam] == ["search-insert", "find-peak", "climb-stairs"]
    exam = CodeMetaInfoExamMaker(bank, num_exam_questions=300).make_exam_questions([{"tags": "Dynamic Programming"}])
    assert [r["task_id"] for r in exam] == ["climb-stairs"]
    assert CodeMetaInfoExamMaker(bank).make_exam_questions([{"question": "no tags"}]) == []  # skipped, as the seed
    assert [r["task_id"] for r in CodeFixedExamMaker(bank).make_exam_questions([{"task_id": "find-peak"}])] == ["find-peak"]
    with pytest.raises(LbtError, match="task_id"):
        CodeFixedExamMaker(bank).make_exam_questions([{"task_id": "nope"}])


def test_ques_similarity_tfidf_neighbours_and_repetitions(tmp_path):
    bank = [{"question": q, "answer": "1"} for q in
            ["sum of two numbers", "sort a list of words", "sum of many numbers", "reverse a string"]]
    maker = QuesSimilarityExamMaker(bank, num_exam_questions=2, num_repetitions=2)
    exam = maker.make_exam_questions([{"question": "sum of two numbers"}])
    assert [r["question"] for r in exam] == ["sum of two numbers", "sum of many numbers"] * 2  # ids * reps, as the seed
    assert len(QuesSimilarityExamMaker(bank).make_exam_questions([{"question": "sort words"}])) == 8  # seed defaults 1 x 8
    with pytest.raises(LbtError, match="not a model directory on disk"):
        QuesSimilarityExamMaker(bank, sentence_transformers_model_name="all-mpnet-base-v2")
    with pytest.raises(LbtError, match="not a file"):
        QuesSimilarityExamMaker(bank, knn_pickle_path=str(tmp_path / "knn16.pkl"))
    import pickle

    (tmp_path / "knn.pkl").write_bytes(pickle.dumps({"t": [(3, "reverse a string"), (0, "sum of two numbers")]}))
    exam = QuesSimilarityExamMaker(bank, knn_pickle_path=str(tmp_path / "knn.pkl"), num_exam_questions=2,
                                   num_repetitions=2).make_exam_questions([{"question": "t"}])
    assert [r["question"] for r in exam] == ["reverse a string"] * 2 + ["sum of two numbers"] * 2  # the seed's order


def test_recall_mode():
    assert MathScorer(recall_mode=True).score("x = 5 \\text{ or } x = 7", "7") == 1.0
    assert MathScorer(recall_mode=True).score("8", "7") == 0.0
    assert MathScorer().score("x = 5 \\text{ or } x = 7", "7") == 0.0


# --- lbt exam with seed keys ----------------------------------------------------------------------------
def _seed_cfg(rel="math/chatgpt4o_trgen.yaml", **over):
    cfg = yaml.safe_load((SEED / "config" / rel).read_text())
    cfg.update(over)
    return cfg


def _exam(tmp_path, cfg, bank=None, teaching=None, out="out"):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text(yaml.safe_dump(cfg))
    scripted.save(bank if bank is not None else scripted.math_split(), tmp_path / "bank")
    args = ["exam", str(cfg_file), "--output-path", str(tmp_path / out), "--exam-dataset-file", str(tmp_path / "bank"), "-q"]
    if teaching:
        scripted.save(teaching, tmp_path / "teaching")
        args += ["--teaching-dataset-file", str(tmp_path / "teaching")]
    return main(args)


@pytest.fixture
def azure(fake_server, monkeypatch):
    import fake_openai

    monkeypatch.setattr(fake_openai, "scripted_answer", scripted.scripted_answer)
    monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", fake_server.api_base.removesuffix("/v1"))
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "k")
    return fake_server


def test_per_model_num_return_sequences_and_range_selected_indexes(tmp_path, azure):
    from datasets import load_from_disk

    cfg = _seed_cfg(exam_maker_cfg={"selected_indexes": "range(1, 3)"})
    cfg["general_student_sample_cfg"]["num_return_sequences"] = 1
    cfg["student_model_cfgs"][0]["sample_cfg"] = {"num_return_sequences": 3}  # the entry's own wins
    assert _exam(tmp_path, cfg) == 0
    row = load_from_disk(str(tmp_path / "out"))[0]
    assert row["exam_questions"] == [r["question"] for r in scripted.math_split()[1:3]]
    assert [len(x) for x in row["exam_details"]["chatgpt4o"]["rationales"]] == [3, 3]
    assert len(azure.requests) == 6


def test_math_metainfo_seed_keys_run(tmp_path, azure):
    cfg = _seed_cfg(teaching_plans="every", exam_maker_type="math_metainfo",
                    exam_maker_cfg={"same_subject": True, "level_controls": ["=", ">"], "num_exam_questions": 2,
                                    "random": False})
    teaching = [dict(tp) for tp in scripted.MATH_TPS]
    assert _exam(tmp_path, cfg, bank=[dict(r) for r in scripted.MATH_SNAPSHOTS], teaching=teaching) == 0


def test_code_bank_without_answer_runs_and_without_tests_is_one_line(tmp_path, azure, capsys):
    cfg = _seed_cfg("code/chatgpt35_trgen.yaml")
    bank = [{k: v for k, v in r.items() if k != "answer"} for r in scripted.code_bank()]
    assert _exam(tmp_path, cfg, bank=bank) == 0
    bank = [{k: v for k, v in r.items() if k != "test"} for r in scripted.code_bank()]
    assert _exam(tmp_path, cfg, bank=bank, out="out2") == 2
    err = capsys.readouterr().err
    assert "has no 'test'" in err and "Traceback" not in err


@pytest.mark.parametrize("change, msg", [
    ({"exam_scorer_type": "code_submit"}, "exam_scorer_type code_submit: not supported (LeetCode submission"),
    ({"exam_scorer_type": "code_apps"}, "exam_scorer_type code_apps: not supported"),
    ({"exam_scorer_type": "code_choose"}, "exam_scorer_type code_choose: not supported"),
    ({"exam_scorer_type": "model_based", "exam_scorer_cfg": {"model_type": "x", "model_cfg": {}}},
     "exam_scorer_type model_based: not supported"),
    ({"exam_prompter_type": "code_debug"}, "exam_prompter_type code_debug: not supported"),
    ({"exam_prompter_type": "code_pipeline4"}, "exam_prompter_type code_pipeline4: not supported"),
    ({"student_model_cfgs": [{"model_type": "stub"}]}, "model_type stub: not supported"),
    ({"student_model_cfgs": [{"model_type": "huggingface", "model_cfg": {"path": "meta-llama/Meta-Llama-3-8B-Instruct"}}]},
     "model_cfg.path: meta-llama/Meta-Llama-3-8B-Instruct is not a checkpoint directory on disk"),
    ({"exam_maker_type": "func", "exam_maker_cfg": {}}, "exam_maker_type func: the exam is made from teaching items"),
    ({"exam_maker_cfg": {"selected_indexes": "range(0, 99)"}}, "selected_indexes: 4 is out of range"),
    ({"exam_prompter_cfg": {"demo_template": "{question} {solution}", "exam_template": "{question}"}},
     "demo_template: unknown field {solution}"),
])
def test_seed_features_lbt_does_not_provide_are_one_line_errors(tmp_path, azure, capsys, change, msg):
    assert _exam(tmp_path, _seed_cfg(**change)) == 2
    err = capsys.readouterr().err.strip()
    assert msg in err and len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert not azure.requests and not (tmp_path / "out").exists()  # nothing left behind to refuse the fixed config


def test_huggingface_fastchat_and_pt_path_errors(tmp_path, azure, capsys):
    from lbt_dspy.models.embedded import checkpoint_path

    for model_cfg, msg in (({"fastchat": True}, "model_cfg.fastchat: true is not supported"),
                           ({"pt_path": str(tmp_path / "policy.pt")}, "model_cfg.pt_path: ")):
        cfg = _seed_cfg(student_model_cfgs=[{"model_type": "huggingface",
                                             "model_cfg": {"path": str(checkpoint_path()), **model_cfg}}])
        assert _exam(tmp_path, cfg) == 2
        err = capsys.readouterr().err.strip()
        assert msg in err and len(err.splitlines()) == 1, err


# --- model_type huggingface -----------------------------------------------------------------------------
def _captured_server(monkeypatch, entry: dict):
    """Build the entry's LM; the server lbt would start is captured, not started."""
    from lbt_dspy.models import ModelPool, vllm_server

    monkeypatch.setattr(vllm_server, "vllm_python", lambda: "/usr/bin/python-with-vllm")
    monkeypatch.setattr(vllm_server, "vllm_build", lambda python: "cpu")
    made = []

    def fake_shared(self, items):
        made.extend(factory() for _, factory in items)
        return made[-len(items):]

    monkeypatch.setattr(ModelPool, "shared_servers", fake_shared)
    with ModelPool() as pool:
        lm = pool.lm(entry, {"do_sample": False, "eos_token_id": [1, 2], "pad_token_id": 1, "batch_size": 8})
    return lm, made[0]


def test_huggingface_serves_the_local_checkpoint_with_vllm_or_the_transformers_fallback(monkeypatch):
    from lbt_dspy.models import TransformersServer, VLLMServer, checkpoint_path

    path = str(checkpoint_path())
    entry = {"model_type": "huggingface", "model_cfg": {"path": path, "name": "smol", "max_new_tokens": 64}}
    lm, server = _captured_server(monkeypatch, entry)  # vLLM, the engine, on the CPU build here
    cmd = server.command()
    assert isinstance(server, VLLMServer) and cmd[:5] == ["/usr/bin/python-with-vllm", "-m",
                                                          "vllm.entrypoints.openai.api_server", "--model", path]
    assert {"--dtype", "float32", "--enforce-eager"} <= set(cmd)
    assert lm.lbt_name == "smol" and lm.kwargs["max_tokens"] == 64 and lm.kwargs["temperature"] == 0.0
    assert lm.engine.prefill == "completions" and lm.engine.tokenizer_name == path  # the seed's prompt, byte for byte
    assert lm.engine.extra_body["stop_token_ids"] == [1, 2]  # the seed's eos_token_id, as vLLM's stop ids
    assert lm.engine.send_top_k and lm.engine.supports_response_schema
    entry["model_cfg"]["server"] = "transformers"  # the explicit fallback
    lm, server = _captured_server(monkeypatch, entry)
    assert type(server) is TransformersServer and server.command()[2:4] == ["transformers.cli.transformers", "serve"]
    assert lm.engine.prefill == "completions" and lm.engine.tokenizer_name == path
    assert not lm.engine.send_top_k


def test_pt_path_state_is_loaded_into_the_served_checkpoint(tmp_path, monkeypatch):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from lbt_dspy.models.embedded import checkpoint_path
    from lbt_dspy.models.huggingface import merged_checkpoint

    monkeypatch.setenv("LBT_CACHE_DIR", str(tmp_path / "cache"))
    base = tmp_path / "tiny"
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2))
    model.save_pretrained(base)
    AutoTokenizer.from_pretrained(str(checkpoint_path())).save_pretrained(base)
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    torch.save({"state": state}, tmp_path / "policy.pt")  # the seed's DPO checkpoint format
    merged = merged_checkpoint(str(base), str(tmp_path / "policy.pt"))
    loaded = AutoModelForCausalLM.from_pretrained(merged).state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)
    assert merged_checkpoint(str(base), str(tmp_path / "policy.pt")) == merged  # merged once, then reused
    torch.save({"weights": state}, tmp_path / "bad.pt")
    with pytest.raises(LbtError, match="no 'state' entry"):
        merged_checkpoint(str(base), str(tmp_path / "bad.pt"))


def test_rerun_resumes_asks_nothing_again_and_rewrites_the_same_output(tmp_path, azure):
    from datasets import load_from_disk

    cfg = _seed_cfg("math/chatgpt4o_trgen.yaml")
    assert _exam(tmp_path, cfg) == 0
    first, n = load_from_disk(str(tmp_path / "out")).to_list(), len(azure.requests)
    assert n == 4
    assert _exam(tmp_path, cfg) == 0  # the same command again: every generation is in exam.jsonl
    assert len(azure.requests) == n and load_from_disk(str(tmp_path / "out")).to_list() == first
