"""M1 orchestration end to end against a scripted OpenAI-compatible server (real HTTP, real store)."""

import json
import os
import signal
import subprocess
import sys
import time

import dspy
import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

from lbt_dspy import FunctionalExamMaker, LbTScore, M1, MathScorer, Student, Teacher, TemplateAdapter
from lbt_dspy.config import M1Config
from lbt_dspy.data import make_families
from lbt_dspy.m1 import run_m1
from lbt_dspy.models import ModelPool
from lbt_dspy.m1.results import summarize

LBT = [sys.executable, "-m", "lbt_dspy.cli"]


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-PLANTED-SECRET-1234")


def test_run_m1_records_every_generation_once(fake_server, tmp_path):
    cfg = M1Config.from_dict(fake_config(fake_server.api_base))
    calls = run_m1(cfg, tmp_path / "run", progress=False)
    # 3 TPs: 3 greedy + 3x2 pairs + 3x2 pairs x 1 student x 2 exam problems
    timing = calls.pop("seconds")
    assert calls == {"greedy": 3, "teach": 6, "exam": 12, "failed": 0, "error": None,
                     "prefix_cache": None}  # a scripted server reports no prefix cache
    assert timing > 0
    assert len(fake_server.requests) == 21
    summary = summarize(tmp_path / "run")
    assert summary["num_problems"] == 3
    assert set(summary["table"]) == {"Greedy", "SC", "M1 MAX", "M1 SUM", "AVG"}
    # a second run finds everything done and calls nothing
    assert run_m1(cfg, tmp_path / "run", progress=False)["exam"] == 0
    assert len(fake_server.requests) == 21
    # the key never reaches the saved config
    assert "PLANTED" not in (tmp_path / "run" / "config.yaml").read_text()


def test_exam_scores_are_the_students_accuracy(fake_server, tmp_path):
    cfg = M1Config.from_dict(fake_config(fake_server.api_base))
    run_m1(cfg, tmp_path / "run", progress=False)
    exam = [json.loads(line) for line in open(tmp_path / "run" / "exam.jsonl")]
    teach, bank = make_families(3, 2, seed=1)
    refs = {e["question"]: e["answer"] for e in bank}
    for rec in exam:
        assert rec["score"] in (0.0, 1.0)
    # the recorded score is what the math scorer says of the recorded answer
    bank_by_tp = {}
    for e in bank:
        bank_by_tp.setdefault(e["unique_id"], []).append(e)
    for rec in exam:
        ref = bank_by_tp[rec["tp"]][rec["slot"]]["answer"]
        assert rec["score"] == MathScorer().score(rec["answer"], ref)
    assert refs


def test_m1_module_composes_teacher_students_and_exam(fake_server):
    teach, bank = make_families(1, 2, seed=1)
    with ModelPool(cache=False) as pool:
        entry = fake_config(fake_server.api_base)["teacher_model_cfg"]
        lm = pool.lm(entry, {"temperature": 0.7})
        adapter = TemplateAdapter(stub_teaching_items=[])
        m1 = M1(Teacher(lm=lm, adapter=adapter, num_pairs=3),
                LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(bank, 2, 1), MathScorer()))
        pred = m1(item=teach[0])
    assert len(pred.candidates) == 3
    assert all(0.0 <= c.lbt_score <= 1.0 for c in pred.candidates)
    assert pred.answer in {c.answer for c in pred.candidates}
    # the student saw the teacher's rationale as its in-context example
    # the last user turn (the prefill follows as a trailing assistant message, as the seed sends it)
    student_prompts = [[m for m in r["body"]["messages"] if m["role"] == "user"][-1]["content"] for r in fake_server.requests[3:]]
    assert all(teach[0]["question"] in p for p in student_prompts)


def test_adapter_renders_paper_prompt_with_prefill():
    adapter = TemplateAdapter()
    demo = dspy.Example(question="What is 2+2?", rationale="2+2=4.", answer="4")
    msgs = adapter.format(None, [demo], {"question": "What is 3+3?"})
    assert msgs[-1] == {"role": "assistant", "content": "[[Solution]]:\nLet's think step by step.\n\n"}
    user = msgs[-2]["content"]
    assert user.startswith("Your task is to answer the last question below.")
    assert user.count("[[Question]]") == 4 + 1 + 1  # 4 stub shots, the TR-TA demo, the exam problem
    assert "2+2=4.\n\n[[Final Answer]]:\n$4$" in user
    parsed = adapter.parse(None, "3+3=6\n\n[[Final Answer]]:\n$6$\n")
    assert parsed == {"rationale": "3+3=6", "answer": "6"}
    assert msgs[0] == {"role": "system", "content": "You are a helpful assistant."}  # the seed always sends it


def test_multi_round_adapter_uses_turns():
    adapter = TemplateAdapter(demo_template="Q: {question}[ROLESWITCHING assistant:]{rationale} A: {answer}",
                              exam_template="Q: {question}", stub_teaching_items=[], use_multi_round_conv=True,
                              instruction="Solve. ")
    demo = dspy.Example(question="1+1?", rationale="two", answer="2")
    msgs = adapter.format(None, [demo], {"question": "2+2?"})
    assert [m["role"] for m in msgs] == ["system", "user", "assistant", "user"]
    assert msgs[1]["content"] == "Q: 1+1?" and msgs[2]["content"] == "two A: 2" and msgs[3]["content"] == "Solve. Q: 2+2?"


def _write_cfg(tmp_path, api_base, **over):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(fake_config(api_base, **over)))
    return path


def test_sigkill_mid_run_then_resume_gives_same_table(tmp_path):
    env = {**os.environ, "FAKE_API_KEY": "sk-test"}
    over = {"dataset_cfg": {"num_families": 4, "num_variants": 3, "seed": 2}, "num_rationales": 3,
            "exam_maker_cfg": {"num_exam_questions": 3, "num_repetitions": 1}}
    total = 4 + 4 * 3 + 4 * 3 * 3  # greedy + pairs + exams = 52 generations
    # reference: an uninterrupted run
    with FakeOpenAI() as srv:
        cfg = _write_cfg(tmp_path, srv.api_base, **over)
        subprocess.run(LBT + ["m1", str(cfg), "--output-path", str(tmp_path / "ref"), "-q"], env=env, check=True,
                       capture_output=True)
        assert len(srv.requests) == total
    reference = (tmp_path / "ref" / "report.md").read_text().split("## Accuracy vs")[0]
    # interrupted run: SIGKILL once some exam records exist
    with FakeOpenAI(delay=0.05) as srv:
        cfg = _write_cfg(tmp_path, srv.api_base, **over)
        run = tmp_path / "run"
        proc = subprocess.Popen(LBT + ["m1", str(cfg), "--output-path", str(run), "-q"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        exam = run / "exam.jsonl"
        deadline = time.time() + 60
        while time.time() < deadline and not (exam.exists() and exam.read_text().count("\n") >= 5):
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert not (run / "report.md").exists()
        done = sum(len(open(run / f"{s}.jsonl").read().splitlines()) for s in ("greedy", "teach", "exam"))
        assert 0 < done < total
        # requests the killed process had sent may still be reaching the server: count from when it is quiet
        seen, quiet_since = -1, time.time()
        while time.time() - quiet_since < 0.3:
            if len(srv.requests) != seen:
                seen, quiet_since = len(srv.requests), time.time()
            time.sleep(0.02)
        srv.requests.clear()
        subprocess.run(LBT + ["m1", str(cfg), "--output-path", str(run), "-q"], env=env, check=True,
                       capture_output=True)
        # the rerun asked only for what was not finished
        assert len(srv.requests) == total - done
    records = [json.loads(x) for s in ("greedy", "teach", "exam") for x in open(run / f"{s}.jsonl")]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == total  # every generation recorded exactly once
    assert (run / "report.md").read_text().split("## Accuracy vs")[0] == reference


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_lbt_score_is_a_metric_for_dspy_evaluate(fake_server, tmp_path):
    """`LbTScore.metric` in `dspy.Evaluate`: the teacher's greedy TR-TA per teaching problem, scored by the
    students' exam; the same numbers as calling `LbTScore` directly. The program saves and loads as JSON
    (DSPy deep-copies it on load: the copies share the engine, whose live client cannot be deep-copied)."""
    teach, bank = make_families(2, 2, seed=4)
    with ModelPool(cache=False) as pool:
        lm = pool.lm(fake_config(fake_server.api_base)["teacher_model_cfg"], {"temperature": 0.0})
        adapter = TemplateAdapter(stub_teaching_items=[])
        teacher = Teacher(lm=lm, adapter=adapter, num_pairs=1)
        lbt = LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(bank, 2, 1), MathScorer())

        class Solve(dspy.Module):
            def __init__(self):
                super().__init__()
                self.teacher = teacher

            def forward(self, question):
                return self.teacher.sample(question, 0)

        devset = [dspy.Example(**item).with_inputs("question") for item in teach]
        result = dspy.Evaluate(devset=devset, metric=lbt.metric, num_threads=1, display_progress=False)(Solve())
        direct = []
        for item in teach:
            pred = teacher.sample(item["question"], 0)
            direct.append(lbt(item=item, rationale=pred.rationale, answer=pred.answer).score)
    assert result.score == pytest.approx(100 * sum(direct) / len(direct))
    m1 = M1(teacher, lbt)
    m1.teacher.solve.demos = [dspy.Example(question="2+2?", rationale="2 and 2 make 4.", answer="4")]
    m1.save(str(tmp_path / "m1.json"))
    again = M1(Teacher(lm=lm, adapter=adapter, num_pairs=1), lbt)
    assert not again.teacher.solve.demos
    again.load(str(tmp_path / "m1.json"))
    assert [d["answer"] for d in again.teacher.solve.demos] == ["4"]  # what the program learnt comes back
    import copy

    assert copy.deepcopy(teacher).lm.engine is teacher.lm.engine
