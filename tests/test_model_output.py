"""A model's answer never fails a run: whatever it says (empty, null, whitespace, the stop string at once, no answer
marker, cut at max_tokens, noise, a bare marker...) is an answer, parsed, scored, recorded and counted. Only
transport and server faults are failed calls. The scripted server answers some prompts always with the same odd
kind (`fake_openai.ODD_ANSWERS`), so a retry would meet it again."""

import json
import subprocess
import sys
from pathlib import Path

import dspy
import pytest
import yaml
from conftest import fake_config, m3_config
from fake_openai import ODD_ANSWERS, FakeOpenAI

from lbt_dspy import M1, LbTScore, MathScorer, Student, TemplateAdapter, Teacher
from lbt_dspy.cli import main
from lbt_dspy.data import arith_dataset
from lbt_dspy.exam import FunctionalExamMaker
from lbt_dspy.m3.adapters import ClassifierAdapter, TeacherAdapter, TurnsAdapter
from lbt_dspy.m3.signatures import GenerateExamples, make_classifier
from lbt_dspy.models import ModelPool
from lbt_dspy.signatures import SolveProblem

REPO = Path(__file__).resolve().parents[1]
LBT = [sys.executable, "-m", "lbt_dspy.cli"]
ODD_TEXTS = [text for text, _ in ODD_ANSWERS.values()]


def _entry(api_base, name="fake"):
    return {"model_type": "openai", "model_cfg": {"model": "fake", "name": name, "api_base": api_base,
                                                  "api_key_env": "FAKE_API_KEY"}}


def _records(run: Path, stage: str) -> list[dict]:
    path = run / f"{stage}.jsonl"
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out.append(rec.get("record", rec) if "record" in rec and isinstance(rec["record"], dict) else rec)
    return out


# --- the adapters: any text is parsed ----------------------------------------------------------------------
@pytest.mark.parametrize("text", ODD_TEXTS + ["\ud800"], ids=list(ODD_ANSWERS) + ["lone_surrogate"])
def test_every_adapter_parses_every_odd_answer(text):
    cases = [(TemplateAdapter(), SolveProblem),
             (ClassifierAdapter(), make_classifier("Is it a lie?").signature),
             (ClassifierAdapter(labels=["food", "sports"]), dspy.Signature("sentence -> topic", "Topic?")),
             (ClassifierAdapter(labels=()), dspy.Signature("sentence -> summary", "Summarize.")),
             (TurnsAdapter(labels=["food", "sports"]), dspy.Signature("sentence -> topic", "Topic?")),
             (TeacherAdapter(), GenerateExamples)]
    for adapter, sig in cases:
        [value] = adapter._call_postprocess(sig, sig, [text], None, {})
        assert set(sig.output_fields) <= set(value), (adapter, value)
        assert isinstance(value["completion"], str) and "\ud800" not in value["completion"]
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # recordable as UTF-8
        assert isinstance(value["unparsed"], bool)
    [value] = TemplateAdapter()._call_postprocess(SolveProblem, SolveProblem, [text], None, {})
    if text is None or not text.strip() or "[[Final Answer]]" not in text:
        assert value["unparsed"] is True


def test_format_followed_is_parsed_and_not_flagged():
    [v] = TemplateAdapter()._call_postprocess(SolveProblem, SolveProblem, ["5+3=8\n\n[[Final Answer]]:\n8"], None, {})
    assert (v["answer"], v["unparsed"], v["rationale"]) == ("8", False, "5+3=8")
    for bare in ("[[Final Answer]]:", "so\n[[Final Answer]]:\n  \n"):
        [v] = TemplateAdapter()._call_postprocess(SolveProblem, SolveProblem, [bare], None, {})
        assert v["unparsed"] is True, bare


# --- modules: Teacher, Student (any adapter), M1 -------------------------------------------------------------
def test_teacher_and_student_answer_whatever_the_model_says(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=1.0) as srv, ModelPool(cache=False, num_retries=3) as pool:
        lm = pool.lm(_entry(srv.api_base), {"max_new_tokens": 32, "temperature": 0.7})
        teacher = Teacher(lm=lm, adapter=TemplateAdapter(stub_teaching_items=[]), num_pairs=6)
        pred = teacher(question="Ann has 2 pens. Ann buys 3 more pens. How many pens does Ann have now?")
        assert len(pred.completions) == 6
        assert all(isinstance(c["answer"], str) for c in pred.completions)
        student = Student(lm=lm, adapter=TemplateAdapter(stub_teaching_items=[]))
        for q in range(12):
            p = student(question=f"Bo has {q} cups. Bo buys 1 more cups.", demos=[])
            assert isinstance(p.answer, str) and isinstance(p.completion, str) and p.unparsed in (True, False)
        # every call reached the server once: a model's answer is never retried as an error
        assert len(srv.requests) == 6 + 12
        assert sum(srv.odd_kinds.values()) == 18


def test_cut_off_answers_are_flagged(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=1.0) as srv, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm(_entry(srv.api_base), {"max_new_tokens": 32, "temperature": 0.7})
        student = Student(lm=lm, adapter=TemplateAdapter(stub_teaching_items=[]))
        preds = [student(question=f"Cy has {q} hats. Cy buys 2 more hats.") for q in range(40)]
    cut = [p for p in preds if p.cut_off]
    assert cut and all(p.completion in (ODD_ANSWERS["cut_off"][0], ODD_ANSWERS["solution_loop"][0]) for p in cut)
    assert all(p.cut_off is False for p in preds if p not in cut)


def test_a_format_the_adapter_cannot_parse_is_an_unparsed_answer(monkeypatch):
    """DSPy's ChatAdapter (and its JSON fallback) raise AdapterParseError on the scripted text: a Student under
    it gets an answer flagged unparsed, not an exception."""
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI() as srv, ModelPool(cache=False, num_retries=0) as pool:
        lm = pool.lm(_entry(srv.api_base), {"max_new_tokens": 32})
        pred = Student(lm=lm, adapter=dspy.ChatAdapter())(question="Dee has 3 cats. Dee buys 2 more cats.")
    assert pred.unparsed is True and pred.answer == "" and "[[Final Answer]]" in pred.completion


def test_null_content_is_an_empty_answer_and_no_choices_a_server_fault(monkeypatch):
    from lbt_dspy.models.engine import OpenAICompatEngine

    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=1.0) as srv:
        # find a prompt whose odd kind is "null"
        from fake_openai import odd_kind

        q = next(f"Eve has {i} owls." for i in range(10_000)
                 if odd_kind(f"You are a helpful assistant.\nEve has {i} owls.", 1.0) == "null")
        lm = dspy.LM("openai/fake", engine=OpenAICompatEngine("fake", api_base=srv.api_base), cache=False,
                     num_retries=0)
        assert lm(messages=[{"role": "system", "content": "You are a helpful assistant."},
                            {"role": "user", "content": q}]) == [""]
    with FakeOpenAI(faults=["empty"]) as srv:
        lm = dspy.LM("openai/fake", engine=OpenAICompatEngine("fake", api_base=srv.api_base), cache=False,
                     num_retries=0)
        with pytest.raises(Exception, match="no choices"):
            lm(messages=[{"role": "user", "content": "hi"}])


def test_python_m1_module_finishes_on_odd_answers(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    data = arith_dataset(num_families=3, num_variants=3)
    with FakeOpenAI(odd=0.6) as srv, ModelPool(cache=False, num_retries=3) as pool:
        lm = pool.lm(_entry(srv.api_base), {"max_new_tokens": 32, "temperature": 0.7})
        prompt = TemplateAdapter(stub_teaching_items=[])
        lbt = LbTScore([Student(lm=lm, adapter=prompt)], FunctionalExamMaker(data.exam_bank, num_exam_questions=3,
                                                                              num_repetitions=1), MathScorer())
        m1 = M1(Teacher(lm=lm, adapter=prompt, num_pairs=4), lbt, num_threads=4)
        preds = [m1(**tp) for tp in data.teaching]
    assert len(srv.requests) == 3 * (4 + 4 * 3)  # every call once, none retried
    assert srv.odd_kinds
    for pred in preds:
        assert isinstance(pred.answer, str) and len(pred.candidates) == 4
        assert all(c.lbt_score is not None for c in pred.candidates)


# --- the commands ---------------------------------------------------------------------------------------------
def test_lbt_m1_finishes_records_every_call_and_reports_counts(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=0.6) as srv:
        cfg = tmp_path / "m1.yaml"
        cfg.write_text(yaml.safe_dump(fake_config(srv.api_base, num_retries=3, num_rationales=4)))
        run = tmp_path / "run"
        assert main(["m1", str(cfg), "--output-path", str(run), "-q"]) == 0
        printed = capsys.readouterr().out
        records = {st: _records(run, st) for st in ("greedy", "teach", "exam")}
        assert len(srv.requests) == sum(len(r) for r in records.values()) == 3 + 3 * 4 + 3 * 4 * 2
        assert all("completion" in r and "unparsed" in r for rs in records.values() for r in rs)
        assert any(r["unparsed"] for rs in records.values() for r in rs)
        assert any(r.get("cut_off") for rs in records.values() for r in rs) or not (
            {"cut_off", "solution_loop"} & set(srv.odd_kinds))
        assert "| answers | n | unparsed |" in printed and "| exam: fake-student |" in printed
        n_requests = len(srv.requests)
        assert main(["m1", str(cfg), "--output-path", str(run), "-q"]) == 0  # a rerun resumes: nothing to redo
        assert len(srv.requests) == n_requests
    summary = json.loads((run / "summary.json").read_text())
    unparsed = sum(r["unparsed"] for rs in records.values() for r in rs)
    assert sum(c["unparsed"] for c in summary["answers"].values()) == unparsed
    assert "## What the models said" in (run / "report.md").read_text()
    capsys.readouterr()
    assert main(["select", str(run)]) == 0 and "unparsed" in capsys.readouterr().out
    assert main(["report", str(run)]) == 0 and "unparsed" in capsys.readouterr().out


def test_lbt_exam_finishes_on_odd_answers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    tp = tmp_path / "tp.jsonl"
    tp.write_text("".join(json.dumps({"question": f"Ann has {i} pens. Ann buys 3 more pens.", "rationale": "+3",
                                      "answer": str(i + 3)}) + "\n" for i in range(4)))
    ep = tmp_path / "ep.jsonl"
    ep.write_text("".join(json.dumps({"question": f"Bo has {i} cups. Bo buys 1 more cups.", "answer": str(i + 1)})
                          + "\n" for i in range(6)))
    with FakeOpenAI(odd=0.6) as srv:
        cfg = {**fake_config(srv.api_base, num_retries=3), "teaching_plans": [[0], [1], [2, 3], ["question-only", 0]],
               "exam_maker_type": "fixed", "exam_maker_cfg": {}}
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(cfg))
        out = tmp_path / "o"
        assert main(["exam", str(tmp_path / "c.yaml"), "--output-path", str(out), "--teaching-dataset-file", str(tp),
                     "--exam-dataset-file", str(ep), "-q"]) == 0
        recs = _records(out, "exam")
        assert len(srv.requests) == len(recs) == 4 * 6
    assert srv.odd_kinds and any(r["unparsed"] for r in recs)
    rows = [json.loads(x) for x in (out / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 4
    assert "| exam: fake-student |" in capsys.readouterr().out


def test_lbt_m2_eval_finishes_on_odd_answers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=0.7) as srv:
        cfg = tmp_path / "m1.yaml"
        cfg.write_text(yaml.safe_dump(fake_config(srv.api_base, num_retries=3,
                                                  dataset_cfg={"num_families": 12, "num_variants": 2, "seed": 1})))
        out = tmp_path / "eval"
        assert main(["m2", "eval", str(cfg), "--output-path", str(out), "-q"]) == 0
        assert len(srv.requests) == 12
    printed = capsys.readouterr().out
    assert "| greedy: base |" in printed
    recs = _records(out / "base", "greedy")
    assert len(recs) == 12 and any(r["unparsed"] for r in recs)
    assert main(["select", str(out)]) == 0 and "unparsed" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0


def test_lbt_m3_finishes_on_odd_answers(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_API_KEY", "k")
    with FakeOpenAI(odd=0.5) as srv:
        cfg = m3_config(tmp_path, srv.api_base, rounds=2, num_retries=3)
        path = tmp_path / "m3.yaml"
        path.write_text(yaml.safe_dump(cfg))
        run = tmp_path / "m3run"
        assert main(["m3", str(path), "--output-path", str(run), "-q"]) == 0
    assert srv.odd_kinds
    capsys.readouterr()
    assert main(["select", str(run)]) == 0
    table = capsys.readouterr().out
    assert "unparsed" in table and "test: zero_shot (teacher)" in table
    assert main(["report", str(run)]) == 0
    evals = _records(run, "eval")
    assert evals and all("unparsed" in e and "empty" in e for e in evals) and sum(e["unparsed"] for e in evals) > 0
    summary = json.loads((run / "summary.json").read_text())  # written by the report
    assert sum(r["unparsed"] for r in summary["answers"].values() if r["n"]) >= sum(e["unparsed"] for e in evals)


def test_the_demo_config_finishes_end_to_end_on_odd_answers(tmp_path):
    """`make demo`'s config, all its calls (problems x (1 greedy + pairs + pairs x exam problems)), against a scripted
    server whose odd answers repeat: exit 0, the table printed, every call made once and recorded, no warnings."""
    cfg = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    pairs, exam = cfg["num_pairs"], cfg["exam_maker_cfg"]["num_exam_questions"]
    total = cfg["dataset_cfg"]["num_families"] * (1 + pairs + pairs * exam)
    with FakeOpenAI(odd=0.3) as srv:
        entry = {"model_type": "openai", "model_cfg": {"model": "smollm2", "name": "smollm2-135m",
                                                       "api_base": srv.api_base, "api_key_env": "FAKE_API_KEY",
                                                       "prefill": "continue"}}
        cfg.update(teacher_model_cfg=entry, student_model_cfgs=[entry], num_retries=5)
        path = tmp_path / "demo.yaml"
        path.write_text(yaml.safe_dump(cfg))
        env = {"FAKE_API_KEY": "k", "DSPY_CACHEDIR": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin",
               "HOME": str(tmp_path)}
        done = subprocess.run(LBT + ["m1", str(path), "--output-path", str(tmp_path / "demo"), "-q"], cwd=REPO,
                              env=env, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        # at most one request per call: none retried (the scripted teacher repeats itself, so DSPy's cache answers
        # the exam prompts that repeat)
        assert len(srv.requests) <= total
    run = tmp_path / "demo"
    assert sum(len(_records(run, st)) for st in ("greedy", "teach", "exam")) == total
    assert "| M1 SUM |" in done.stdout and "| answers | n | unparsed |" in done.stdout
    assert srv.odd_kinds.get("cut_off") or srv.odd_kinds.get("solution_loop")
    for notice in ("LM response was truncated", "Timeout is disabled", "Traceback"):
        assert notice not in done.stderr


SCRIPT = """
import os, sys, threading
import lbt_dspy
from lbt_dspy import Student, TemplateAdapter
from lbt_dspy.models import ModelPool
from lbt_dspy.scoring.math import answers_equivalent
with ModelPool(cache=False, num_retries=0) as pool:
    lm = pool.lm({"model_type": "openai", "model_cfg": {"model": "fake", "api_base": sys.argv[1],
                 "api_key_env": "FAKE_API_KEY"}}, {"max_new_tokens": 32})
    student = Student(lm=lm, adapter=TemplateAdapter(stub_teaching_items=[]))
    preds = [student(question=f"Cy has {q} hats. Cy buys 2 more hats.") for q in range(30)]
t = threading.Thread(target=lambda: answers_equivalent("\\\\frac{1}{2}", "0.5"))  # math-verify off the main thread
t.start(); t.join()
print(sum(bool(p.cut_off) for p in preds), "cut off")
"""


def test_the_python_api_prints_no_per_call_notices_about_answers(tmp_path):
    """A cut-off answer is data (``cut_off``), not a console warning; nor is math-verify's timeout notice."""
    with FakeOpenAI(odd=1.0) as srv:
        done = subprocess.run([sys.executable, "-c", SCRIPT, srv.api_base], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300, env={"FAKE_API_KEY": "k", "PATH": "/usr/bin:/bin",
                                                          "DSPY_CACHEDIR": str(tmp_path / "c"), "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.split()[0]) > 0  # some answers were cut off...
    for notice in ("LM response was truncated", "Timeout is disabled"):
        assert notice not in done.stderr  # ...and nothing said so per call
