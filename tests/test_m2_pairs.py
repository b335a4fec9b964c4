"""M2 pair construction on hand-made samples and hand-made M1 run directories (no model)."""

import json

import pytest

from lbt_dspy.cli import main
from lbt_dspy.errors import LbtError
from lbt_dspy.m2.pairs import PairConfig, ScoredPair, build_pairs, choose_pairs, load_pairs, save_pairs, score_pairs
from lbt_dspy.store import RunStore


def scored(*scores):
    return [ScoredPair(i, f"r{i}", f"a{i}", 0.0, None, s) for i, s in enumerate(scores)]


def idx(pairs):
    return [(c.index, r.index) for c, r in pairs]


def test_threshold_is_strict_with_float_slack():
    # 0.8 - 0.5 == 0.30000000000000004 in floats: still "not more than 0.3", so no pair
    pairs, n = choose_pairs(scored(1.0, 0.8, 0.5, 0.2), PairConfig(threshold=0.3, max_pairs_per_problem=0))
    assert n == 3
    assert idx(pairs) == [(0, 3), (1, 3), (0, 2)]  # largest gap first
    assert all(c.score > r.score for c, r in pairs)


def test_ties_make_no_pair_and_chosen_is_the_higher_score():
    assert choose_pairs(scored(0.5, 0.5, 0.5), PairConfig(threshold=0.0))[0] == []
    pairs, _ = choose_pairs(scored(0.0, 1.0), PairConfig(threshold=0.3))
    assert idx(pairs) == [(1, 0)]


def test_cap_spreads_over_samples_and_is_deterministic():
    # 4 right and 4 wrong samples: 16 pairs with the same gap; a cap of 8 uses every sample twice
    samples = scored(1, 0, 1, 0, 1, 0, 1, 0)
    cfg = PairConfig(max_pairs_per_problem=8)
    pairs, n = choose_pairs(samples, cfg)
    assert n == 16 and len(pairs) == 8
    uses = {}
    for c, r in pairs:
        uses[c.index] = uses.get(c.index, 0) + 1
        uses[r.index] = uses.get(r.index, 0) + 1
    assert sorted(uses.values()) == [2] * 8
    assert idx(choose_pairs(samples, cfg)[0]) == idx(pairs)


def test_cap_keeps_the_largest_gaps():
    pairs, n = choose_pairs(scored(1.0, 0.9, 0.55, 0.0), PairConfig(max_pairs_per_problem=2))
    assert n == 5  # gaps 1.0 (0,3), 0.9 (1,3), 0.55 (2,3), 0.45 (0,2), 0.35 (1,2); 0.1 (0,1) is too small
    assert idx(pairs) == [(0, 3), (1, 3)]


def test_random_selection_is_seeded():
    samples = scored(1, 0, 1, 0, 1, 0)
    a = idx(choose_pairs(samples, PairConfig(selection="random", max_pairs_per_problem=3, seed=1), "tp")[0])
    b = idx(choose_pairs(samples, PairConfig(selection="random", max_pairs_per_problem=3, seed=1), "tp")[0])
    assert a == b and len(a) == 3


def test_identical_texts_make_no_pair():
    s = [ScoredPair(0, "same", "4", 1.0, None, 1.0), ScoredPair(1, "same", "4", 0.0, None, 0.0)]
    assert choose_pairs(s, PairConfig())[0] == []
    assert len(choose_pairs(s, PairConfig(skip_identical=False))[0]) == 1


def test_scores_lbt_and_correctness_only():
    s = [ScoredPair(0, "r", "a", 1.0, 1 / 3), ScoredPair(1, "r", "a", 0.0, 1.0), ScoredPair(2, "r", "a", 1.0, None)]
    both = score_pairs([ScoredPair(**vars(x)) for x in s], PairConfig())
    assert [x.index for x in both] == [0, 1]  # no exam, no LbT score: dropped
    assert both[0].score == pytest.approx(0.5 + 1 / 6) and both[1].score == pytest.approx(0.5)
    corr = score_pairs([ScoredPair(**vars(x)) for x in s], PairConfig(correctness_only=True))
    assert [x.score for x in corr] == [1.0, 0.0, 1.0]


def test_bad_config_values():
    with pytest.raises(LbtError):
        PairConfig(selection="best")
    with pytest.raises(LbtError):
        PairConfig(threshold=-1)
    with pytest.raises(LbtError, match="unknown key"):
        PairConfig.from_dict({"treshold": 0.3})


# --- hand-made run directories ---------------------------------------------------------------------
RUN_CONFIG = {
    "teacher_model_cfg": {"model_type": "openai", "model_cfg": {"model": "fake"}},
    "student_model_cfgs": [{"model_type": "openai", "model_cfg": {"model": "fake", "name": "s1"}}],
    "dataset_type": "arith", "dataset_cfg": {"num_families": 2, "num_variants": 2, "seed": 1},
    "num_rationales": 4,
    "exam_maker_type": "func", "exam_maker_cfg": {"num_exam_questions": 2, "num_repetitions": 1},
    "exam_prompter_cfg": {
        "instruction": "Answer the last question.\n\n",
        "demo_template": "[[Question]]:\n{question}\n\n[[Solution]]:\n{rationale}\n\n[[Final Answer]]:\n{answer}\n",
        "exam_template": "{demo}\n\n[[Question]]:\n{question}\n\n[ROLESWITCHING assistant:][[Solution]]:\n",
        "stub_teaching_items": [],
    },
}


def make_run(path, samples):
    """samples: {tp: [(correct, [exam scores of student s1] or None), ...]}"""
    store = RunStore(path, RUN_CONFIG)
    for tp, rows in samples.items():
        for i, (correct, exam) in enumerate(rows):
            store.append("teach", {"key": f"{tp}/{i}", "tp": tp, "sample": i, "rationale": f"{tp} reasoning {i}",
                                   "answer": str(10 + i), "score": float(correct)})
            for slot, sc in enumerate(exam or []):
                store.append("exam", {"key": f"{tp}/{i}/s1/{slot}", "tp": tp, "sample": i, "student": "s1",
                                      "slot": slot, "rationale": "x", "answer": "y", "score": float(sc)})
    store.close()
    return path


def test_pairs_from_a_run_directory(tmp_path):
    run = make_run(tmp_path / "run", {
        # scores (0.5 c + 0.5 lbt): 1.0, 0.5, 0.25, 0.0 -> gaps > 0.3: (0,3) 1, (0,2) .75, (0,1) .5, (1,3) .5
        "arith/000": [(1, [1, 1]), (1, [0, 0]), (0, [1, 0]), (0, [0, 0])],
        # all equal: no pair
        "arith/001": [(0, [0, 0]), (0, [0, 0]), (0, [0, 0]), (0, None)],
    })
    records, summary = build_pairs([run], PairConfig())
    assert [(r["chosen_sample"], r["rejected_sample"]) for r in records] == [(0, 3), (0, 2), (0, 1), (1, 3)]
    assert summary["pairs"] == 4 and summary["problems_with_pairs"] == 1
    assert summary["samples_dropped_no_exam"] == 1
    rec = records[0]
    assert rec["score_chosen"] == 1.0 and rec["score_rejected"] == 0.0
    # the teacher's own prompt, without the prefill; the prefill starts the completions
    assert [m["role"] for m in rec["prompt"]] == ["system", "user"]  # the seed's system message, as lbt m1 sends
    assert rec["prompt"][-1]["content"].startswith("Answer the last question.")
    assert rec["prompt"][-1]["content"].rstrip().endswith(rec["question"])
    assert rec["chosen"] == [{"role": "assistant", "content":
                              "[[Solution]]:\narith/000 reasoning 0\n\n[[Final Answer]]:\n10\n"}]
    assert rec["rejected"][0]["content"].startswith("[[Solution]]:\narith/000 reasoning 3")

    # the Correctness-DPO baseline: correct vs wrong only, samples without exams kept
    records, summary = build_pairs([run], PairConfig(correctness_only=True))
    assert sorted((r["chosen_sample"], r["rejected_sample"]) for r in records) == [(0, 2), (0, 3), (1, 2), (1, 3)]

    # cap 1 keeps the largest gap
    records, _ = build_pairs([run], PairConfig(max_pairs_per_problem=1))
    assert [(r["chosen_sample"], r["rejected_sample"]) for r in records] == [(0, 3)]


def test_pairs_pool_runs_save_load_and_trl_format(tmp_path):
    from trl.data_utils import is_conversational

    a = make_run(tmp_path / "a", {"arith/000": [(1, [1, 1]), (0, [0, 0])]})
    b = make_run(tmp_path / "b", {"arith/000": [(1, [1, 0]), (0, [0, 1])]})
    records, summary = build_pairs([a, b], PairConfig(max_pairs_per_problem=0))
    assert summary["problems"] == 1 and summary["samples"] == 4  # same problem, same prompt: pooled
    assert {(r["chosen_run"], r["rejected_run"]) for r in records} >= {(str(a), str(a)), (str(a), str(b))}
    out = save_pairs(records, summary, tmp_path / "pairs")
    ds = load_pairs(out)
    assert len(ds) == len(records) and is_conversational(ds[0])
    assert load_pairs(out / "pairs.jsonl")[0]["chosen"] == records[0]["chosen"]
    assert json.loads((out / "pairs_summary.json").read_text())["pairs"] == len(records)


def test_cli_pairs(tmp_path, capsys):
    run = make_run(tmp_path / "run", {"arith/000": [(1, [1, 1]), (0, [0, 0]), (0, [0, 1])]})
    assert main(["m2", "pairs", str(run), "--output-path", str(tmp_path / "p"), "--max-pairs-per-problem", "1"]) == 0
    assert "kept 1" in capsys.readouterr().out
    assert len(load_pairs(tmp_path / "p")) == 1
    # the same output path again: refused before any work, the earlier pairs untouched
    before = (tmp_path / "p" / "pairs.jsonl").read_bytes()
    assert main(["m2", "pairs", str(run), "--output-path", str(tmp_path / "p")]) == 2
    assert "already holds pairs" in capsys.readouterr().err
    assert (tmp_path / "p" / "pairs.jsonl").read_bytes() == before
    # nothing qualifies: exit 1 and a hint
    assert main(["m2", "pairs", str(run), "--output-path", str(tmp_path / "q"), "--threshold", "1"]) == 1
    # not a run directory: a one-line error, exit 2
    assert main(["m2", "pairs", str(tmp_path / "nope"), "--output-path", str(tmp_path / "r")]) == 2
    assert "not an M1 run directory" in capsys.readouterr().err
    with pytest.raises(LbtError, match="no pairs"):
        load_pairs(tmp_path / "q")


def test_eval_summary_report_and_plot(tmp_path):
    """`lbt m2 eval`'s table on hand-made scores: accuracy, Wilson interval, wins/losses vs base, and the PNG."""
    from lbt_dspy.m2.evaluate import draw_accuracy, eval_report, summarize_eval

    keys = ["a", "b", "c", "d"]
    results = {"base": {"entry": {"model_type": "openai", "model_cfg": {"model": "m"}},
                        "scores": {"a": 1.0, "b": 0.0, "c": 0.0, "d": 0.0}},
               "tuned": {"entry": {"model_type": "openai", "model_cfg": {"model": str(tmp_path / "no-such")}},
                         "scores": {"a": 0.0, "b": 1.0, "c": 1.0, "d": 0.0}}}
    s = summarize_eval(results, keys, [{"question": k} for k in keys])
    base, tuned = s["rows"]
    assert base["accuracy"] == 0.25 and tuned["accuracy"] == 0.5
    assert tuned["vs_base"] == {"wins": 2, "losses": 1, "paired": 4}
    assert 0 <= base["ci95"][0] < 0.25 < base["ci95"][1] <= 1  # bootstrap over the 4 problems
    (d,) = s["comparisons"]  # tuned - base, paired
    assert (d["a"], d["b"], d["estimate"], d["wins"], d["losses"], d["ties"]) == ("tuned", "base", 0.25, 2, 1, 1)
    assert d["low"] < 0 < d["high"] and not d["excludes_zero"]
    assert summarize_eval(results, keys, [{"question": k} for k in keys]) == s
    s.update({"split": "all", "limit": None, "failed_calls": 0, "dataset": {"dataset_type": "arith", "dataset_cfg": {}}})
    text = eval_report(s)
    assert "| tuned | 50.0% (2/4) |" in text and "+2 / -1" in text and "accuracy_by_model.png" in text
    assert "| tuned − base | +25.0 pts [" in text and "| 2 / 1 / 1 | 4 | not resolved" in text
    draw_accuracy(s, tmp_path / "acc.png")
    assert (tmp_path / "acc.png").stat().st_size > 0
