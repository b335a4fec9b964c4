"""Adaptive exams: the racing scheduler on synthetic exams with known truth, and `exam_budget: adaptive`
in `run_m1` against a scripted server (resumable, same picks as the full exam at confidence 1)."""

import hashlib
import json
import sys
from pathlib import Path

import pytest
from conftest import fake_config
from fake_openai import FakeOpenAI

import fake_openai
from lbt_dspy.config import M1Config
from lbt_dspy.errors import LbtError
from lbt_dspy.m1 import run_m1
from lbt_dspy.m1.adaptive import AdaptiveExam, exam_scheduler, pick, replay
from lbt_dspy.m1.results import summarize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "eval"))
from synthetic_exams import synthetic_problems  # noqa: E402

METHODS = ("M1 MAX", "M1 SUM")


def used(obs):
    return sum(v is not None for row in obs for v in row)


# --- the scheduler, pure logic ---------------------------------------------------------------------------
@pytest.mark.parametrize("num_pairs,seed", [(4, 0), (16, 1), (64, 2)])
def test_confidence_one_always_gives_the_full_exam_pick(num_pairs, seed):
    probs = synthetic_problems(25, num_pairs, seed=seed, teacher_skill=0.45, wrong_spread=0.7)
    sched = AdaptiveExam(num_slots=9, initial=1, confidence=1.0)
    spent = total = 0
    for p in probs:
        obs = replay(p["groups"], p["full"], sched)
        for m in METHODS:
            assert pick(m, p["groups"], obs) == pick(m, p["groups"], p["full"])
        spent += used(obs)
        total += len(obs) * 9
    assert spent < total  # worst-case bounds still skip some generations


def test_full_results_need_nothing_more():
    p = synthetic_problems(1, 16, seed=3)[0]
    assert AdaptiveExam(num_slots=9, confidence=0.9).next_slots(p["groups"], p["full"]) == {}


def test_clear_case_is_decided_early():
    # answer 0: 6 pairs whose students pass everything; answer 1: 2 pairs whose students fail everything
    groups = [0] * 6 + [1] * 2
    full = [[1.0] * 9] * 6 + [[0.0] * 9] * 2
    spent = {}
    for conf in (1.0, 0.95, 0.9):
        obs = replay(groups, full, AdaptiveExam(num_slots=9, initial=1, confidence=conf))
        assert pick("M1 SUM", groups, obs) == pick("M1 MAX", groups, obs) == 0
        spent[conf] = used(obs)
    assert spent[1.0] < len(full) * 9  # worst-case bounds: a proof, so it costs more
    assert spent[0.9] <= spent[0.95] < len(full) * 9 / 3
    # SUM alone is settled by the first round's single exam problem per pair
    only_sum = replay(groups, full, AdaptiveExam(num_slots=9, confidence=0.95, methods=("M1 SUM",)))
    assert used(only_sum) == len(full)


def test_unanimous_problem_takes_no_exam():
    sched = AdaptiveExam(num_slots=9)
    assert sched.next_slots([0, 0, 0], [[None] * 9] * 3) == {}
    assert sched.next_slots([None, None], [[None] * 9] * 2) == {}  # no parseable answer: nothing to pick
    assert sched.next_slots([0, None, 0], [[None] * 9] * 3) == {}


def test_first_round_gives_every_pair_initial_slots_in_exam_order():
    todo = AdaptiveExam(num_slots=9, initial=3).next_slots([0, 1, None], [[None] * 9, [1.0] + [None] * 8, [None] * 9])
    assert todo == {0: [0, 1, 2], 1: [1, 2]}


def test_racing_resumes_from_any_point():
    """The scheduler is stateless: stopping after any round and going on gives the same exam."""
    sched = AdaptiveExam(num_slots=9, initial=1, confidence=0.9)
    for p in synthetic_problems(8, 24, seed=5, teacher_skill=0.45, wrong_spread=0.7):
        once = replay(p["groups"], p["full"], sched)
        obs = [[None] * 9 for _ in p["full"]]
        for _ in range(2):  # two rounds, then a "new process" with a new scheduler goes on
            for i, slots in sched.next_slots(p["groups"], obs).items():
                for s in slots:
                    obs[i][s] = p["full"][i][s]
        again = AdaptiveExam(num_slots=9, initial=1, confidence=0.9)
        while todo := again.next_slots(p["groups"], obs):
            for i, slots in todo.items():
                for s in slots:
                    obs[i][s] = p["full"][i][s]
        assert obs == once


def test_adaptive_agrees_with_the_full_exam_on_synthetic_data_with_fewer_generations():
    probs = synthetic_problems(30, 64, seed=7, teacher_skill=0.45, wrong_spread=0.7)
    sched = exam_scheduler({}, num_slots=9)  # the defaults a config gets
    agree = {m: 0 for m in METHODS}
    spent = total = 0
    for p in probs:
        obs = replay(p["groups"], p["full"], sched)
        spent += used(obs)
        total += len(obs) * 9
        for m in METHODS:
            agree[m] += pick(m, p["groups"], obs) == pick(m, p["groups"], p["full"])
    assert spent / total < 0.5
    assert min(agree.values()) >= 0.9 * len(probs)


def test_several_students_make_fractional_slot_scores():
    sched = AdaptiveExam(num_slots=3, initial=1, confidence=1.0, units_per_slot=2)
    groups = [0, 0, 1]
    full = [[1.0, 1.0, 1.0], [1.0, 0.5, 1.0], [0.0, 0.5, 0.0]]
    obs = replay(groups, full, sched)
    for m in METHODS:
        assert pick(m, groups, obs) == pick(m, groups, full) == 0


@pytest.mark.parametrize("bad", [{"initial": 0}, {"confidence": 0}, {"confidence": 1.5}, {"step": 0},
                                 {"methods": ["SC"]}, {"confidnce": 0.9}])
def test_bad_scheduler_settings_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        exam_scheduler(bad, num_slots=9)
    with pytest.raises(LbtError, match="exam_budget_cfg"):
        M1Config.from_dict({"exam_budget": "adaptive", "exam_budget_cfg": bad})


def test_config_fields():
    with pytest.raises(LbtError, match="exam_budget"):
        M1Config.from_dict({"exam_budget": "half"})
    # a full-budget config is saved as before the fields existed, so older run directories still resume
    assert "exam_budget" not in M1Config.from_dict({}).to_dict()
    saved = M1Config.from_dict({"exam_budget": "adaptive", "exam_budget_cfg": {"confidence": 0.9}}).to_dict()
    assert saved["exam_budget"] == "adaptive" and saved["exam_budget_cfg"] == {"confidence": 0.9}


# --- run_m1 with exam_budget: adaptive ---------------------------------------------------------------------
@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-adaptive")


@pytest.fixture
def varied_teacher(monkeypatch):
    """The scripted server's teacher answers vary between samples of one problem (a real teacher samples),
    so that problems have several answer groups; student answers stay a function of the prompt."""
    plain = fake_openai.scripted_answer

    def answer(prompt, nth=0):
        if prompt.count("[[Question]]") >= 2:  # a student: a demo, then the exam problem
            return plain(prompt, nth)
        text = plain(prompt, 0)
        value = int(text.rsplit("\n", 2)[-2])
        off = int(hashlib.sha256(f"{prompt}#{nth}".encode()).hexdigest(), 16) % 3
        return f"We compute it and get {value + off}.\n\n[[Final Answer]]:\n{value + off}\n"

    monkeypatch.setattr(fake_openai, "scripted_answer", answer)


def _cfg(api_base, **over):
    return M1Config.from_dict(fake_config(
        api_base, num_rationales=6, concurrency=1,
        dataset_cfg={"num_families": 5, "num_variants": 3, "seed": 2},
        exam_maker_cfg={"num_exam_questions": 3, "num_repetitions": 2}, **over))


def test_m1_adaptive_gives_the_full_exam_picks_at_confidence_one(tmp_path, varied_teacher):
    with FakeOpenAI() as srv:
        run_m1(_cfg(srv.api_base), tmp_path / "full", progress=False)
    with FakeOpenAI() as srv:
        calls = run_m1(_cfg(srv.api_base, exam_budget="adaptive", exam_budget_cfg={"confidence": 1.0}),
                       tmp_path / "adaptive", progress=False)
    assert calls["failed"] == 0
    full, adaptive = summarize(tmp_path / "full"), summarize(tmp_path / "adaptive")
    for a, f in zip(adaptive["problems"], full["problems"]):
        assert a["tp"] == f["tp"]
        for method in ("M1 MAX", "M1 SUM"):
            assert a["picks"][method]["fake-student"] == f["picks"][method]["fake-student"]
    answers = {}
    for line in (tmp_path / "full" / "teach.jsonl").read_text().splitlines():
        rec = json.loads(line)
        answers.setdefault(rec["tp"], set()).add(rec["answer"])
    contested = sum(len(a) > 1 for a in answers.values())
    budget = json.loads((tmp_path / "adaptive" / "exam_budget.json").read_text())
    assert budget["complete"] and budget["full_exam_generations"] == 5 * 6 * 6
    assert calls["exam"] == budget["student_generations"] < budget["full_exam_generations"]
    assert contested  # the data has something to decide


def test_m1_adaptive_resumes_after_failures_and_then_makes_no_calls(tmp_path, varied_teacher):
    cfg_over = dict(exam_budget="adaptive", exam_budget_cfg={"confidence": 0.9}, num_retries=0)
    # 5 greedy + 30 teacher calls succeed, then every 4th exam call fails
    faults = [None] * 35 + [None, None, None, 500] * 40
    with FakeOpenAI(faults=faults) as srv:
        first = run_m1(_cfg(srv.api_base, **cfg_over), tmp_path / "run", progress=False)
        assert first["failed"] > 0
        assert not json.loads((tmp_path / "run" / "exam_budget.json").read_text())["complete"]
        srv.faults.clear()  # the server recovers
        second = run_m1(_cfg(srv.api_base, **cfg_over), tmp_path / "run", progress=False)
        assert second["failed"] == 0
        assert json.loads((tmp_path / "run" / "exam_budget.json").read_text())["complete"]
        third = run_m1(_cfg(srv.api_base, **cfg_over), tmp_path / "run", progress=False)
    assert third["exam"] == 0 and third["teach"] == 0
    keys = [json.loads(x)["key"] for x in (tmp_path / "run" / "exam.jsonl").read_text().splitlines()]
    assert len(keys) == len(set(keys))  # nothing examined twice
    # the run ended where an uninterrupted one ends: the scheduler wants nothing more
    budget = json.loads((tmp_path / "run" / "exam_budget.json").read_text())
    assert budget["student_generations"] == len(keys)
