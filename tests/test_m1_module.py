"""The `M1` module is what `lbt m1` runs: the same LbT scores and picks (math and code), the same request
bodies from `lbt_dspy.lm` as from a config, concurrency bounded by num_threads, async, DSPy-native I/O."""

import asyncio
import json
import threading

import dspy
import pytest
import yaml
from conftest import fake_config
from fake_openai import FakeOpenAI

import lbt_dspy
from lbt_dspy import FunctionalExamMaker, LbTScore, M1, MathScorer, Student, Teacher, TemplateAdapter
from lbt_dspy.cli import main
from lbt_dspy.components import build_components, build_m1, build_teacher
from lbt_dspy.config import M1Config
from lbt_dspy.data import make_families
from lbt_dspy.errors import LbtError
from lbt_dspy.m1 import run_m1, tp_key
from lbt_dspy.m1.results import code_table_rows, summarize
from lbt_dspy.models import ModelPool
from lbt_dspy.results import find_code_score


@pytest.fixture(autouse=True)
def _key(monkeypatch):
    monkeypatch.setenv("FAKE_API_KEY", "sk-test-module")


@pytest.fixture
def varied(monkeypatch):
    """Teacher samples of one problem differ (by how often the prompt was seen), so problems have several
    answer groups and the picks have something to decide; students answer as the scripted server does."""
    import hashlib

    import fake_openai

    plain = fake_openai.scripted_answer

    def answer(prompt, nth=0):
        if prompt.count("[[Question]]") >= 2 or "[[Final Code]]" in prompt:
            return plain(prompt, nth)
        value = int(plain(prompt, 0).rsplit("\n", 2)[-2])
        off = int(hashlib.sha256(f"{prompt}#{nth}".encode()).hexdigest(), 16) % 3
        return f"We compute it and get {value + off}.\n\n[[Final Answer]]:\n{value + off}\n"

    monkeypatch.setattr(fake_openai, "scripted_answer", answer)


def _module_run(raw: dict):
    """The M1 module of a config on every problem, no run directory: greedy first, as `lbt m1` does
    (the scripted server varies answers by the order prompts arrive; one call at a time keeps it)."""
    cfg = M1Config.from_dict(raw)
    parts = build_components(cfg)
    with ModelPool(cache=False, num_retries=0) as pool:
        m1 = build_m1(cfg, pool, parts)
        greedy = build_teacher(cfg, pool, parts.adapter, greedy=True)
        for tp in parts.data.teaching:
            greedy.sample(tp["question"], 0)
        return m1, {tp_key(tp, n): m1(**tp) for n, tp in enumerate(parts.data.teaching)}


def _math(api_base):
    return fake_config(api_base, concurrency=1, num_pairs=5, dataset_cfg={"num_families": 4, "num_variants": 3,
                                                                         "seed": 5},
                       exam_maker_cfg={"num_exam_questions": 3, "num_repetitions": 1})


def test_module_and_lbt_m1_give_the_same_scores_and_picks_math(tmp_path, varied):
    with FakeOpenAI() as srv:
        run_m1(M1Config.from_dict(_math(srv.api_base)), tmp_path / "run", progress=False)
    summary = summarize(tmp_path / "run")
    with FakeOpenAI() as srv:
        m1, preds = _module_run(_math(srv.api_base))
    decided = 0
    for row in summary["problems"]:
        pred = preds[row["tp"]]
        assert [round(c.lbt_score, 4) for c in pred.candidates] == row["lbt_scores"]["fake-student"]
        assert pred.answer == row["picks"]["M1 SUM"]["fake-student"]
        m1.method = "M1 MAX"
        assert m1.select(pred.candidates).answer == row["picks"]["M1 MAX"]["fake-student"]
        m1.method = "M1 SUM"
        decided += len({c.answer for c in pred.candidates}) > 1
    assert decided >= 2  # the problems had answers to choose between


def test_module_and_lbt_m1_give_the_same_scores_and_picks_code(tmp_path, monkeypatch):
    import fake_openai
    from test_code_m1 import code_config

    # Two pairs the scripted teacher wrote alike make the same exam prompts, asked from two pairs' branches at
    # once: an answer that varied with the order they arrive in would make the two runs differ by a race. Exam
    # prompts (they hold a pair the scripted teacher wrote) get one answer each; the teacher's samples still vary.
    plain = fake_openai.scripted_answer
    monkeypatch.setattr(fake_openai, "scripted_answer",
                        lambda prompt, nth=0: plain(prompt, 0 if "Follow the docstring step by step." in prompt else nth))

    with FakeOpenAI() as srv:
        raw = code_config(srv.api_base, concurrency=1, num_pairs=3, dataset_cfg={"limit": 4})
        run_m1(M1Config.from_dict(raw), tmp_path / "run", progress=False)
    code = summarize(tmp_path / "run")["code"]
    with FakeOpenAI() as srv:
        m1, preds = _module_run(code_config(srv.api_base, concurrency=1, num_pairs=3, dataset_cfg={"limit": 4}))
    assert not m1.vote and m1.tie_break == "v_score" and m1.method == "M1 MAX"
    ties = 0
    for tp, row in code["problems"].items():
        pred = preds[tp]
        assert pred.pair == find_code_score(code_table_rows(code, tp), "M1 MAX", "fake-student").pair
        assert [c.v_score for c in pred.candidates] == row["v_scores"]
        scores = [c.lbt_score for c in pred.candidates]
        ties += len(set(scores)) < len(scores)
    assert ties  # some picks were made by the V-score tie-break


def test_lbt_dspy_lm_sends_the_same_requests_as_lbt_m1(tmp_path):
    """A program composed in Python with `lbt_dspy.lm` and `lbt m1` on its config: identical request bodies
    (completions prefill, rendered by the model's chat template, as the embedded model gets them)."""
    from lbt_dspy.models.embedded import checkpoint_path

    tok = str(checkpoint_path())
    with FakeOpenAI() as srv:
        model = {"model": "fake", "api_base": srv.api_base, "api_key_env": "FAKE_API_KEY", "prefill": "completions",
                 "tokenizer": tok}
        entry = {"model_type": "openai", "model_cfg": model}
        raw = fake_config(srv.api_base, teacher_model_cfg=entry, student_model_cfgs=[entry], num_pairs=3,
                          dataset_cfg={"num_families": 1, "num_variants": 2, "seed": 1},
                          teacher_sample_cfg={"temperature": 0.7, "max_new_tokens": 40, "stop": ["[[Question]]"]},
                          general_student_sample_cfg={"temperature": 0.5, "max_new_tokens": 30})
        path = tmp_path / "cfg.yaml"
        path.write_text(yaml.safe_dump(raw))
        assert main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"]) == 0
        cli = [r for r in srv.requests if r["body"].get("temperature") != 0.0]  # the greedy baseline aside
        srv.requests.clear()
        teach, bank = make_families(1, 2, seed=1)
        adapter = TemplateAdapter(stub_teaching_items=[])
        teacher_lm = lbt_dspy.lm(entry, temperature=0.7, max_new_tokens=40, stop=["[[Question]]"], cache=False)
        student_lm = lbt_dspy.lm(entry, temperature=0.5, max_tokens=30, cache=False)
        assert teacher_lm.model == "openai/fake"  # the short name
        m1 = M1(Teacher(lm=teacher_lm, adapter=adapter, num_pairs=3),
                LbTScore([Student(lm=student_lm, adapter=adapter)], FunctionalExamMaker(bank, 2, 1), MathScorer()),
                num_threads=4)
        m1(**teach[0])
        api = list(srv.requests)
    assert all(r["path"].endswith("/completions") and "messages" not in r["body"] for r in cli)
    assert cli and cli[0]["body"]["prompt"].rstrip().endswith("Let's think step by step.")  # the prefill continued

    def bodies(reqs):
        return sorted(json.dumps(r["body"], sort_keys=True) for r in reqs)
    assert bodies(api) == bodies(cli)


def test_num_threads_bounds_calls_in_flight_and_a_pairs_exam_goes_out_together(monkeypatch):
    import fake_openai

    plain = fake_openai.scripted_answer
    # every teacher sample its own rationale, so each pair's exam requests can be told apart
    monkeypatch.setattr(fake_openai, "scripted_answer", lambda prompt, nth=0: plain(prompt, nth) if
                        prompt.count("[[Question]]") >= 2 else f"Sample {nth} of many.\n\n[[Final Answer]]:\n{nth}\n")
    teach, bank = make_families(1, 3, seed=2)
    from lbt_dspy.models import OpenAICompatEngine

    # Calls in flight are counted where they are made (the engine): a server handler still finishing a sent
    # answer while the client's next call arrives would count one too many.
    in_flight, peak, lock = [0], [0], threading.Lock()
    orig = OpenAICompatEngine._complete

    def counting(engine, request):
        with lock:
            in_flight[0] += 1
            peak[0] = max(peak[0], in_flight[0])
        try:
            return orig(engine, request)
        finally:
            with lock:
                in_flight[0] -= 1
    monkeypatch.setattr(OpenAICompatEngine, "_complete", counting)
    with FakeOpenAI(delay=0.1) as srv:
        with ModelPool(cache=False) as pool:
            lm = pool.lm(fake_config(srv.api_base)["teacher_model_cfg"], {"temperature": 0.7})
            adapter = TemplateAdapter(stub_teaching_items=[])
            m1 = M1(Teacher(lm=lm, adapter=adapter, num_pairs=6),
                    LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(bank, 3, 3), MathScorer()),
                    num_threads=5)
            pred = m1(**teach[0])
    assert len(srv.requests) == 6 + 6 * 9
    assert peak[0] == 5  # bounded by num_threads, and reached
    assert len({c.rationale for c in pred.candidates}) == 6
    # a pair's 9 exam problems are queued back to back (one call at a time: they reach the server in queue order)
    with FakeOpenAI() as srv, ModelPool(cache=False) as pool:
        lm = pool.lm(fake_config(srv.api_base)["teacher_model_cfg"], {"temperature": 0.7})
        m1 = M1(Teacher(lm=lm, adapter=adapter, num_pairs=6),
                LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(bank, 3, 3), MathScorer()),
                num_threads=1)
        pred = m1(**teach[0])
        exams = ["\n".join(m["content"] for m in r["body"]["messages"]) for r in srv.requests[6:]]
    starts = set()
    for c in pred.candidates:  # each pair's 9 requests back to back (pairs in any order: they run side by side)
        at = [i for i, p in enumerate(exams) if c.rationale in p]
        assert len(at) == 9 and at == list(range(at[0], at[0] + 9)) and at[0] % 9 == 0
        starts.add(at[0])
    assert len(starts) == 6


def test_dspy_native_io_acall_and_the_candidates(fake_server):
    teach, bank = make_families(2, 2, seed=1)
    with ModelPool(cache=False) as pool:
        lm = pool.lm(fake_config(fake_server.api_base)["teacher_model_cfg"], {"temperature": 0.7})
        adapter = TemplateAdapter(stub_teaching_items=[])
        teacher = Teacher(lm=lm, adapter=adapter, num_pairs=3)
        lbt = LbTScore([Student(lm=lm, adapter=adapter, name="s")], FunctionalExamMaker(bank, 2, 1), MathScorer())
        m1 = M1(teacher, lbt, num_threads=4)
        # Teacher: a Prediction (the first pair's fields), every pair in completions
        t = teacher(question=teach[0]["question"])
        assert isinstance(t, dspy.Prediction) and t.answer == t.completions[0].answer
        assert len(t.completions) == 3
        pred = m1(question=teach[0]["question"], unique_id=teach[0]["unique_id"])
        c = pred.candidates[0]
        assert set(c.exam["s"]) == {"questions", "answers", "scores"} and len(c.exam["s"]["scores"]) == 2
        assert c.per_student["s"] == c.lbt_score == sum(c.exam["s"]["scores"]) / 2
        assert pred.rationale and pred.answer == pred.candidates[pred.pair].answer

        async def both():
            return await asyncio.gather(m1.acall(**teach[0]), m1.acall(**teach[1]))
        a0, a1 = asyncio.run(both())
        assert a0.answer == pred.answer and len(a1.candidates) == 3
        assert asyncio.run(teacher.acall(question=teach[0]["question"])).answer == t.answer
        assert asyncio.run(lbt.acall(item=teach[0], rationale=c.rationale, answer=c.answer)).score == c.lbt_score
        # the metric on an Example with only question/answer: the exam maker needs unique_id -> one line
        ex = dspy.Example(question=teach[0]["question"], answer=teach[0]["answer"]).with_inputs("question")
        with pytest.raises(LbtError, match=r"^LbTScore: the teaching item has no 'unique_id' field, which exam "
                                           r"maker FunctionalExamMaker needs"):
            lbt.metric(ex, t)
        fixed = LbTScore([Student(lm=lm, adapter=adapter)], lbt_dspy.FixedExamMaker(bank[:2]), MathScorer())
        assert 0.0 <= fixed.metric(ex, t) <= 1.0  # a maker that needs nothing more
        # M1 inside dspy.Evaluate (concurrent M1 calls share its num_threads bound)
        devset = [dspy.Example(**item).with_inputs("question", "unique_id") for item in teach]
        ev = dspy.Evaluate(devset=devset, metric=lambda ex, p, trace=None: MathScorer().score(p.answer, ex.answer),
                           num_threads=2, display_progress=False)
        assert 0.0 <= ev(m1).score <= 100.0


def test_huge_num_pairs_is_refused_before_any_work(tmp_path, capsys):
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(fake_config("http://127.0.0.1:9/v1", num_pairs=100000000)))
    assert main(["m1", str(path), "--output-path", str(tmp_path / "run"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "num_pairs: 100000000" in err
    assert not (tmp_path / "run").exists()


def test_seed_key_num_rationales_is_num_pairs_and_old_runs_resume(fake_server, tmp_path):
    cfg = M1Config.from_dict(fake_config(fake_server.api_base, num_rationales=2))
    assert cfg.num_pairs == 2 == cfg.num_rationales
    run_m1(cfg, tmp_path / "run", progress=False)
    # an old run directory: its config.yaml says num_rationales; it still resumes (and asks nothing more)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    saved["num_rationales"] = saved.pop("num_pairs")
    (tmp_path / "run" / "config.yaml").write_text(yaml.safe_dump(saved))
    n = len(fake_server.requests)
    assert run_m1(M1Config.from_dict(fake_config(fake_server.api_base, num_pairs=2)), tmp_path / "run",
                  progress=False)["exam"] == 0
    assert len(fake_server.requests) == n
    with pytest.raises(LbtError, match="same setting"):
        M1Config.from_dict({"num_pairs": 2, "num_rationales": 2})


def test_a_dead_backend_stops_the_run_promptly_and_records_nothing(tmp_path):
    """Once an endpoint's circuit breaker opens (`BackendDown`), the run starts no more queued calls and
    ends with that error; nothing is recorded for the failed calls, and a rerun resumes."""
    from lbt_dspy.errors import BackendDown

    with FakeOpenAI(faults=[500] * 1000) as srv:
        cfg = M1Config.from_dict(fake_config(srv.api_base, num_pairs=6, concurrency=2,
                                              dataset_cfg={"num_families": 4, "num_variants": 2, "seed": 1}))
        with pytest.raises(BackendDown):
            run_m1(cfg, tmp_path / "run", progress=False)
        asked = len(srv.requests)
        srv.faults.clear()
        assert run_m1(cfg, tmp_path / "run", progress=False)["failed"] == 0  # the server is back: resume
    # 4 greedy calls (their own engine, breaker still closed), then the teacher's 5 that open its breaker
    # and at most one more in flight; the other 4 x 6 - 5 teacher calls were never sent
    assert asked <= 4 + 5 + 2
    keys = [json.loads(x)["key"] for s in ("greedy", "teach", "exam") for x in open(tmp_path / "run" / f"{s}.jsonl")]
    assert len(keys) == len(set(keys)) == 4 + 4 * 6 + 4 * 6 * 2
