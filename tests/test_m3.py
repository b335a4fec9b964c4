"""M3 (LbTOptimizer) with scripted LMs: the loop's logic, the formats, the tasks, the config and the run."""

import json
import re
import threading

import dspy
import pytest
from dspy.lm15 import Message, Response, TextPart, Usage

from lbt_dspy.errors import LbtError
from lbt_dspy.m3 import ClassifierAdapter, LbTOptimizer, WithAdapter, binary_f1, load_task, make_classifier
from lbt_dspy.m3.config import M3Config
from lbt_dspy.m3.formats import parse_examples, parse_reasons, tagged_segments, to_label
from lbt_dspy.m3.run import _Models, run_m3, self_is_lbt

QUESTION = "Is the number positive?"


class ScriptedEngine:
    """A DSPy engine answering with `fn(messages)`; logs every prompt (thread-safe)."""

    def __init__(self, fn):
        self.fn = fn
        self.prompts: list[str] = []
        self.max_tokens: list = []
        self.lock = threading.Lock()

    def complete(self, request):
        messages = [{"role": m.role, "content": m.text or ""} for m in request.messages]
        with self.lock:
            self.prompts.append(messages[0]["content"] if messages else "")
            self.max_tokens.append(request.config.max_tokens)
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(self.fn(messages))]),
                        finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def scripted_lm(name, fn, cache=False):
    engine = ScriptedEngine(fn)
    lm = dspy.LM(f"openai/{name}", engine=engine, cache=cache, num_retries=0)
    lm.lbt_name = name
    return lm, engine


def exam_text(content: str) -> str:
    return content.rsplit("Text: ", 1)[1].split("\n")[0]


def student_fn(wrong: set):
    """A student that labels `pos-*` Yes and `neg-*` No, except on the texts in `wrong`."""
    def fn(messages):
        text = exam_text(messages[0]["content"])
        right = "Yes" if text.startswith("pos") else "No"
        return ({"Yes": "No", "No": "Yes"}[right] if text in wrong else right) + "\n"
    return fn


def failure_cases(content: str) -> list[tuple[str, str]]:
    return re.findall(r'## Failure Case \d+\nText: "(.*?)"\nLabel: (Yes|No)', content)


def teacher_fn(messages):
    """Writes 2 fixed examples; reflects by naming the failures; rewrites as the failure cases (sorted)."""
    content = messages[0]["content"]
    if content.startswith("# Task"):  # classifying: right only on texts it was shown as Yes, else No
        text = exam_text(content)
        return "Yes" if f"**Text:** {text}\n**Label:** Yes" in content else "No"
    if "reasons why these examples" in content:
        names = ", ".join(sorted(t for t, _ in failure_cases(content)))
        return f"<START>The examples do not cover cases such as {names} at all.<END>"
    if "the problem with the current in-context examples is that" in content:
        cases = sorted(failure_cases(content))
        return "<START>\n" + "\n\n".join(f"Text: {t}\nLabel: {y}" for t, y in cases) + "\n<END>"
    if "I need a list of" in content:
        return "Here you go.\n<START>\nText: pos-0\nLabel: Yes\n\nText: neg-0\nLabel: No\n<END>"
    raise AssertionError(f"unexpected prompt: {content[:200]}")


TRAIN = ([dspy.Example(text=f"pos-{i}", label=1) for i in range(6)]
         + [dspy.Example(text=f"neg-{i}", label=0) for i in range(6)])


@pytest.fixture
def world():
    teacher, t_engine = scripted_lm("teacher", teacher_fn)
    a, a_engine = scripted_lm("student-a", student_fn({"pos-1", "pos-2"}))
    b, b_engine = scripted_lm("student-b", student_fn({"neg-2", "pos-3"}))
    return {"teacher": teacher, "students": [a, b], "engines": {"teacher": t_engine, "a": a_engine, "b": b_engine}}


OPT_ARGS = dict(num_examples=4, init_method="gen", rounds=1, beam_size=2, minibatch_size=12, reflections_per_set=3,
                failures_per_reflection=4, expansion_factor=8, score_sample_size=12, num_threads=4, seed=0)


def optimizer(world, **kw):
    args = {**OPT_ARGS, **kw}
    return LbTOptimizer(students=world["students"], classifier_adapter=ClassifierAdapter(), **args)


# --- the loop ----------------------------------------------------------------------------------------
def test_each_students_failures_reach_the_reflection_prompt(world):
    opt = optimizer(world)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    reflect_prompts = [p for p in world["engines"]["teacher"].prompts if "reasons why these examples" in p]
    assert len(reflect_prompts) == 3
    for prompt in reflect_prompts:
        assert {t for t, _ in failure_cases(prompt)} == {"pos-1", "pos-2", "neg-2", "pos-3"}
        assert 'Text: "pos-1"\nLabel: Yes\nPrediction: No' in prompt  # student a's failure
        assert 'Text: "neg-2"\nLabel: No\nPrediction: Yes' in prompt  # student b's failure
        assert "### Example 1\n**Text:** pos-0\n**Label:** Yes" in prompt  # the current set
    r1 = opt.history[1]
    exams = {e["student"]: sorted(TRAIN[i].text for i in e["failed"]) for e in r1["exams"]}
    assert exams == {"student-a": ["pos-1", "pos-2"], "student-b": ["neg-2", "pos-3"]}
    assert all(e["answered"] == 12 for e in r1["exams"])
    assert all(x["failed_students"] == ["student-a", "student-b"] for x in r1["reflections"])


def test_rewrites_become_candidates_and_duplicates_are_dropped(world):
    opt = optimizer(world, rounds=2)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    r1 = opt.history[1]
    assert [len(x["reasons"]) for x in r1["reflections"]] == [1, 1, 1]
    new = [c for c in r1["candidates"] if c["origin"] == "rewrite"]
    assert len(new) == 1 and r1["dropped"]["duplicates"] == 2  # three identical rewrites -> one candidate
    assert new[0]["parent"] == "r0.0" and "pos-1" in new[0]["reason"]
    assert [d["text"] for d in new[0]["demos"]] == ["neg-2", "pos-1", "pos-2", "pos-3"]
    assert [d["label"] for d in new[0]["demos"]] == ["No", "Yes", "Yes", "Yes"]
    dups = [e for e in r1["rewrites"] if "duplicate_of" in e]
    assert len(dups) == 2 and all(e["duplicate_of"] == new[0]["id"] for e in dups)
    # Round 2: rewriting again gives sets already in the beam -> all dropped as duplicates.
    r2 = opt.history[2]
    assert not [c for c in r2["candidates"] if c["id"].startswith("r2.")]
    assert r2["dropped"]["duplicates"] == len([e for e in r2["rewrites"] if e["new"]]) > 0
    # Without dedupe the three rewrites are three candidates.
    opt = optimizer(world, dedupe=False)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    assert len([c for c in opt.history[1]["candidates"] if c["origin"] == "rewrite"]) == 3


def test_expansion_factor_caps_new_sets(world):
    opt = optimizer(world, dedupe=False, expansion_factor=2)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    r1 = opt.history[1]
    assert len([c for c in r1["candidates"] if c["origin"] == "rewrite"]) == 2
    assert r1["dropped"]["over_expansion"] == 1


def test_beam_keeps_the_top_scores_and_best_program_reloads(world, tmp_path):
    # Two failures per reflection: different subsets give different sets with different scores.
    opt = optimizer(world, failures_per_reflection=2, reflections_per_set=4, beam_size=2, seed=3)
    program = opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    r1 = opt.history[1]
    scores = sorted((c["score"] for c in r1["candidates"]), reverse=True)
    assert len(r1["candidates"]) >= 3
    assert [b["score"] for b in r1["beam"]] == scores[:2]
    # The teacher is right on negatives and on positives it was shown: accuracy = (6 + #positive demos) / 12.
    for c in r1["candidates"]:
        assert c["score"] == pytest.approx((6 + len({d["text"] for d in c["demos"] if d["label"] == "Yes"})) / 12)
    best = r1["beam"][0]
    # Tuned under the patch's prompt: the compiled program carries that adapter and is marked compiled.
    assert isinstance(program, WithAdapter) and program._compiled and program.program._compiled
    assert [(d.text, d.label) for d in program.program.demos] == [(d["text"], d["label"]) for d in best["demos"]]
    assert opt.best_per_round[-1]["id"] == best["id"]

    path = tmp_path / "best.json"
    program.save(str(path))
    loaded = WithAdapter(make_classifier(QUESTION), ClassifierAdapter())
    loaded.load(str(path))
    assert [(d["text"], d["label"]) for d in loaded.program.demos] == [(d.text, d.label) for d in program.program.demos]
    assert loaded.program.signature.instructions == QUESTION
    saved = json.loads(path.read_text())
    assert saved["program"]["demos"]  # DSPy's own JSON
    shown = [d.text for d in program.program.demos if d.label == "Yes"]
    with dspy.context(lm=world["teacher"]):  # no adapter given: the program brings its own
        assert loaded(text=shown[0]).label == program(text=shown[0]).label == "Yes"
        assert loaded(text="pos-5").label == "No" or "pos-5" in shown


def test_calls_per_round_are_counted(world):
    opt = optimizer(world)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    r0, r1 = opt.history
    assert r0["calls"] == {"teacher_write": 1, "teacher_reflect": 0, "student_exam": 0, "score": 12,
                           "total": 13, "failed": 0, "cached": 0, "unparsed": 0, "cut_off": 0,
                           "empty": 0}
    # 2 students x 12 exams; 3 reflections; 3 rewrites; (1 incumbent + 1 new set) x 12 scoring texts.
    assert r1["calls"] == {"teacher_write": 3, "teacher_reflect": 3, "student_exam": 24, "score": 24,
                           "total": 54, "failed": 0, "cached": 0, "unparsed": 0, "cut_off": 0,
                           "empty": 0}
    assert len(world["engines"]["a"].prompts) == 12 and len(world["engines"]["b"].prompts) == 12


def test_reason_max_tokens_caps_only_reflections(world):
    optimizer(world, reason_max_new_tokens=7).compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    engine = world["engines"]["teacher"]
    caps = {("reflect" if "reasons why" in p else "other", m) for p, m in zip(engine.prompts, engine.max_tokens)}
    assert ("reflect", 7) in caps and not any(kind == "other" and m == 7 for kind, m in caps)
    assert not any(kind == "reflect" and m != 7 for kind, m in caps)


def test_repeated_prompts_hit_the_cache():
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=True)
    teacher, t_engine = scripted_lm("teacher", teacher_fn, cache=True)
    a, a_engine = scripted_lm("student-a", student_fn({"pos-1", "pos-2"}), cache=True)
    first = LbTOptimizer(students=[a], classifier_adapter=ClassifierAdapter(), num_examples=4, rounds=1, minibatch_size=12, reflections_per_set=2,
                         score_sample_size=12, num_threads=4)
    first.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=teacher)
    served = len(t_engine.prompts) + len(a_engine.prompts)
    # Round 1 re-scores the incumbent on the same 12 texts as round 0: those 12 calls come from the cache.
    assert first.history[1]["calls"]["cached"] >= 12
    again = LbTOptimizer(students=[a], classifier_adapter=ClassifierAdapter(), num_examples=4, rounds=1, minibatch_size=12, reflections_per_set=2,
                         score_sample_size=12, num_threads=4)
    again.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=teacher)
    assert len(t_engine.prompts) + len(a_engine.prompts) == served  # nothing reached the "servers"
    assert all(r["calls"]["cached"] == r["calls"]["total"] > 0 for r in again.history)
    assert again.history[-1]["beam"] == first.history[-1]["beam"]


def test_students_can_score_and_teacher_defaults_to_settings_lm(world):
    opt = optimizer(world, scorer="students")
    with dspy.context(lm=world["teacher"]):
        opt.compile(make_classifier(QUESTION), trainset=TRAIN)
    r0 = opt.history[0]
    # Students a and b are 10/12 right whatever the demos: the score is their mean accuracy.
    assert r0["beam"][0]["score"] == pytest.approx(10 / 12)
    assert r0["calls"]["score"] == 24


def test_without_students_the_teacher_is_its_own_student(world):
    opt = LbTOptimizer(classifier_adapter=ClassifierAdapter(), num_examples=4, rounds=1, minibatch_size=12, reflections_per_set=1,
                       score_sample_size=12, num_threads=2)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    assert [e["student"] for e in opt.history[1]["exams"]] == ["teacher"]
    assert not world["engines"]["a"].prompts


def _without_timing(history):
    """Round records without what depends on where a run was interrupted: wall time, and how many answers came
    without a request (DSPy's cache, or the run's records)."""
    return [{**{k: v for k, v in r.items() if k not in ("seconds", "calls")},
             "calls": {k: v for k, v in r["calls"].items() if k != "cached"}} for r in history]


def test_train_init_and_resume_through_the_record_layer(world, tmp_path):
    """Compiled inside a record scope, every call is recorded; compiling again in it replays them. An
    interrupted compile (the students' server went down mid-exam) resumes: nothing finished is asked again, and
    the rounds and the program are an uninterrupted compile's."""
    from lbt_dspy.errors import BackendDown
    from lbt_dspy.runner import Recorder, record_scope
    from lbt_dspy.store import RunStore

    records = []
    opt = optimizer(world, init_method="train", rounds=2, on_round=records.append)
    program = opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    init = records[0]["beam"][0]["demos"]
    assert sorted(d["label"] for d in init) == ["No", "No", "Yes", "Yes"]
    assert all(d["text"].startswith("pos" if d["label"] == "Yes" else "neg") for d in init)
    assert [r["round"] for r in records] == [0, 1, 2] and opt.history == records
    uninterrupted = sum(len(e.prompts) for e in world["engines"].values())

    calls = {"n": 0}

    def dies_mid_round_2(messages):  # student b's server dies after 20 answers (round 1 asks it 12)
        calls["n"] += 1
        if calls["n"] > 20:
            raise BackendDown("http://student-b", 5)
        return student_fn({"neg-2", "pos-3"})(messages)

    dying, _ = scripted_lm("student-b", dies_mid_round_2)
    for engine in world["engines"].values():
        engine.prompts.clear()
    store = RunStore(tmp_path / "run", {})
    recorder = Recorder(store)
    with pytest.raises(BackendDown), record_scope(recorder, tp="mine"):
        LbTOptimizer(students=[world["students"][0], dying], classifier_adapter=ClassifierAdapter(),
                     **{**OPT_ARGS, "init_method": "train", "rounds": 2}).compile(
            make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    made = len(recorder.records["exam"]) + len(recorder.records["teach"])
    answered = len(world["engines"]["teacher"].prompts) + len(world["engines"]["a"].prompts) + 20
    assert made == answered  # every answer that came back was recorded before the error ended the compile

    for engine in world["engines"].values():
        engine.prompts.clear()
    resumed = optimizer(world, init_method="train", rounds=2)
    with record_scope(Recorder(store), tp="mine"):
        program2 = resumed.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    assert _without_timing(resumed.history) == _without_timing(records)
    assert [(d.text, d.label) for d in program2.program.demos] == [(d.text, d.label) for d in program.program.demos]
    # Only what was not recorded reached the "servers": the uninterrupted compile's calls, less those recorded.
    asked = sum(len(e.prompts) for e in world["engines"].values())
    assert asked == uninterrupted - made
    assert sum(r["calls"]["cached"] for r in resumed.history) == made  # replayed: answered without a request
    # Compiling again in the same scope replays everything.
    for engine in world["engines"].values():
        engine.prompts.clear()
    with record_scope(Recorder(store), tp="mine"):
        again = optimizer(world, init_method="train", rounds=2)
        again.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=world["teacher"])
    assert not any(e.prompts for e in world["engines"].values())
    assert _without_timing(again.history) == _without_timing(records)
    assert all(r["calls"]["cached"] == r["calls"]["total"] for r in again.history)
    with pytest.raises(TypeError, match="record_scope"):
        optimizer(world, history=records)


def test_unparseable_generation_falls_back_to_train_init(world):
    teacher, engine = scripted_lm("mute", lambda m: "Yes" if m[0]["content"].startswith("# Task") else "I can't.")
    opt = LbTOptimizer(students=world["students"], classifier_adapter=ClassifierAdapter(), num_examples=4, rounds=0,
                       score_sample_size=4, init_attempts=2)
    program = opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=teacher)
    assert opt.history[0]["init_fallback"] == "train" and len(opt.history[0]["init_attempts"]) == 2
    assert len(program.program.demos) == 4


def test_failed_calls_are_counted_not_fatal(world):
    def flaky(messages):
        if "reasons why" in messages[0]["content"]:
            raise RuntimeError("boom")
        return teacher_fn(messages)

    teacher, _ = scripted_lm("flaky", flaky)
    opt = optimizer(world)
    opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=teacher)
    assert opt.history[1]["calls"]["failed"] == 3
    assert all(x["reasons"] == [] for x in opt.history[1]["reflections"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="init_method"):
        LbTOptimizer(init_method="random")
    with pytest.raises(ValueError, match="scorer"):
        LbTOptimizer(scorer="oracle")
    with pytest.raises(ValueError, match="no teacher"):
        with dspy.context(lm=None):
            LbTOptimizer().compile(make_classifier(QUESTION), trainset=TRAIN)


# --- formats and metrics -----------------------------------------------------------------------------
def test_parse_examples_is_lenient():
    text = ("junk <START> old <END> more\n<START>\n### Example 1\n**Text:** \"A long text\nwith two lines\"\n"
            "**Label:** Yes\n\n### Example 2\nText: short one\nLabel: no.\n\nText: bad label\nLabel: maybe\n\n"
            "Text: third\nLabel: TRUE\n<END> trailing")
    got = [(e.text, e.label) for e in parse_examples(text)]
    assert got == [("A long text\nwith two lines", "Yes"), ("short one", "No"), ("third", "Yes")]
    assert len(parse_examples(text, limit=2)) == 2
    assert parse_examples("no examples here") == []
    assert [e.text for e in parse_examples("Text: untagged\nLabel: Yes")] == ["untagged"]


def test_reasons_and_tags():
    assert tagged_segments("a <START>one<END> b <START>two<END> <START>cut off") == ["one", "two", "cut off"]
    assert parse_reasons("<START>too short<END><START>the examples never show a false statement by a senator<END>") \
        == ["the examples never show a false statement by a senator"]


def test_labels_and_f1():
    assert [to_label(x) for x in (1, 0, True, "Yes", "no", " YES, it is", "1", "maybe")] == \
        ["Yes", "No", "Yes", "Yes", "No", "Yes", "Yes", "No"]
    assert binary_f1(["Yes", "No"], ["No", "No"]) == 0.0
    assert binary_f1(["Yes", "Yes", "No"], ["Yes", "Yes", "Yes"]) == pytest.approx(0.8)


def test_classifier_adapter_prompt_and_parse():
    adapter = ClassifierAdapter()
    sig = make_classifier(QUESTION).signature
    zero = adapter.format(sig, [], {"text": "pos-1"})[0]["content"]
    assert "# Examples" not in zero and zero.endswith("Text: pos-1\nLabel:") and QUESTION in zero
    assert adapter.parse(sig, " **Yes**\n\nText: x") == {"label": "Yes"}
    assert adapter.parse(sig, "Nope") == {"label": "No"}
    assert adapter.parse(sig, "") == {"label": "No"}


# --- tasks and config --------------------------------------------------------------------------------
def test_tasks_read_repo_data_and_jsonl(tmp_path):
    liar = load_task("liar")
    assert len(liar.train) == 3681 and len(liar.test) == 461
    assert {e.label for e in liar.test} == {"Yes", "No"} and "lie" in liar.question
    fallacy = load_task("fallacy", question="Fallacy?")
    assert fallacy.question == "Fallacy?" and len(fallacy.test) == 800
    (tmp_path / "tr.jsonl").write_text('{"label": 1, "text": "a"}\n{"label": "No", "text": "b"}\n')
    (tmp_path / "te.jsonl").write_text('{"label": 0, "text": "c"}\n')
    task = load_task("jsonl", question="Q?", train_file=tmp_path / "tr.jsonl", test_file=tmp_path / "te.jsonl")
    assert [(e.text, e.label) for e in task.train] == [("a", "Yes"), ("b", "No")]
    with pytest.raises(LbtError, match="did you mean 'liar'"):
        load_task("lair")
    with pytest.raises(LbtError, match="question"):
        load_task("jsonl", train_file=tmp_path / "tr.jsonl", test_file=tmp_path / "te.jsonl")
    (tmp_path / "bad.jsonl").write_text('{"label": 3, "text": "c"}\n')
    with pytest.raises(LbtError, match="label must be"):
        load_task("jsonl", question="Q", train_file=tmp_path / "bad.jsonl", test_file=tmp_path / "te.jsonl")


def test_earlier_keys_task_and_task_cfg_are_read_with_one_line_notices(caplog):
    """``task: liar`` named the dataset before ``task`` meant what the problems are (`lbt_dspy.tasks`), as in
    `lbt m1` configs; an old `lbt m3` config still runs, with one line per renamed key."""
    with caplog.at_level("WARNING", logger="lbt_dspy"):
        cfg = M3Config.from_dict({"task": "fallacy", "task_cfg": {"data_dir": "d"}}, "old.yaml")
    assert (cfg.task, cfg.dataset_type, cfg.dataset_cfg) == ("classification", "fallacy", {"data_dir": "d"})
    notices = [r.getMessage() for r in caplog.records]
    assert notices == ["old.yaml: key 'task: fallacy' is now 'dataset_type: fallacy' (read as it; docs/names.md)",
                       "old.yaml: key 'task_cfg' is now 'dataset_cfg' (read as it; docs/names.md)"]
    with pytest.raises(LbtError, match="task must be one of classification"):
        M3Config.from_dict({"task": "math"})


def test_earlier_python_names_warn_once_and_still_work():
    import warnings

    import lbt_dspy
    import lbt_dspy.m3 as m3
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert lbt_dspy.LbtConfig is lbt_dspy.M1Config and m3.LbTConfig is m3.LbTOptimizerConfig
        assert lbt_dspy.Candidate is lbt_dspy.Pair
    assert [str(w.message).split(" (")[0] for w in seen] == [
        "LbtConfig is now M1Config", "LbTConfig is now LbTOptimizerConfig", "Candidate is now Pair"]
    assert all(w.category is DeprecationWarning for w in seen)


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(LbtError, match="unknown key 'beam_sise' \\(did you mean 'beam_size'\\?\\)"):
        M3Config.from_dict({"beam_sise": 2})
    with pytest.raises(LbtError, match="'rounds' expects int"):
        M3Config.from_dict({"rounds": "5"})
    with pytest.raises(LbtError, match="init_method must be one of gen, train"):
        M3Config.from_dict({"init_method": "trian"})
    with pytest.raises(LbtError, match="unknown baseline 'zeroshot'"):
        M3Config.from_dict({"baselines": ["zeroshot"]})
    with pytest.raises(LbtError, match="dataset_cfg.train: unknown key"):
        M3Config.from_dict({"dataset_cfg": {"train": "x"}})
    path = tmp_path / "c.yaml"
    path.write_text("rounds: [1\n")
    with pytest.raises(LbtError, match="invalid YAML"):
        M3Config.from_yaml(path)
    assert self_is_lbt(M3Config())
    assert not self_is_lbt(M3Config(student_model_cfgs=[{"model_type": "embedded", "sample_cfg": {"temperature": 1}}]))


@pytest.mark.parametrize("repo_config", ["configs/m3_liar.yaml", "configs/m3_liar_paper.yaml"])
def test_shipped_configs_load(repo_config):
    from pathlib import Path

    M3Config.from_yaml(Path(__file__).parents[1] / repo_config)


# --- the run -----------------------------------------------------------------------------------------
def _task_files(tmp_path):
    rows = [{"label": 1, "text": f"pos-{i}"} for i in range(6)] + [{"label": 0, "text": f"neg-{i}"} for i in range(6)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    test = [{"label": 1, "text": f"pos-{i}"} for i in range(1, 5)] + [{"label": 0, "text": "neg-9"}]
    (tmp_path / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))


def test_run_writes_history_report_and_resumes(world, tmp_path):
    _task_files(tmp_path)
    cfg = M3Config.from_dict({
        "dataset_type": "jsonl", "question": QUESTION, "dataset_cfg": {"data_dir": str(tmp_path)},
        "student_model_cfgs": [{"model_type": "openai", "model_cfg": {"model": "a"}},
                               {"model_type": "openai", "model_cfg": {"model": "b"}}],
        "num_examples": 4, "rounds": 2, "beam_size": 2, "minibatch_size": 12, "reflections_per_set": 2,
        "score_sample_size": 12, "random_draws": 2, "eval_students": True, "concurrency": 4, "cache": False})
    classifier, _ = scripted_lm("teacher", teacher_fn)
    models = _Models(world["teacher"], classifier, world["students"])
    out = tmp_path / "run"
    calls = run_m3(cfg, out, progress=False, models=models)
    assert calls["optimize"] > 0 and calls["eval"] > 0 and calls["failed"] == 0

    rounds = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["key"] for r in rounds] == ["LbT/0", "LbT/1", "LbT/2", "self/0", "self/1", "self/2"]
    assert rounds[1]["students"] == ["student-a", "student-b"] and rounds[4]["students"] == ["teacher"]
    evals = {json.loads(line)["key"]: json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()}
    assert {"baseline/zero_shot/teacher", "baseline/random0/teacher", "baseline/random1/teacher",
            "LbT/0/teacher", "LbT/2/student-a", "self/2/teacher"} <= set(evals)
    # Zero-shot the scripted teacher says No to everything: F1 0. With the round-1 set it knows pos-1..3.
    assert evals["baseline/zero_shot/teacher"]["f1"] == 0.0
    assert evals["LbT/1/teacher"]["f1"] > evals["LbT/0/teacher"]["f1"]

    report = (out / "report.md").read_text() if (out / "report.md").exists() else None
    assert report is None  # run_m3 records; the CLI (or write_report) writes the report
    from lbt_dspy.m3.report import summarize, write_report

    s = summarize(out)
    path = write_report(out, s)
    text = path.read_text()
    assert "| LbT | student-a, student-b |" in text and "| self | teacher |" in text
    assert "always Yes (no LM)" in text and "random K (2 draws)" in text and "LM calls per round" in text
    assert (out / "f1_vs_round.png").stat().st_size > 0 and (out / "f1_vs_round_LbT.png").exists()
    # optimizer vs baselines: paired bootstrap intervals over the test items (lbt_dspy.stats)
    assert "## Optimizer vs baselines: paired intervals" in text and "| LbT round 2 − zero_shot | +" in text
    iv = s["evidence"]["intervals"]["LbT/1"]
    assert iv["estimate"] == pytest.approx(evals["LbT/1/teacher"]["f1"]) and iv["low"] <= iv["estimate"] <= iv["high"]
    loaded = WithAdapter(make_classifier(QUESTION), ClassifierAdapter())
    loaded.load(str(out / "best_program_LbT.json"))
    assert [d["text"] for d in loaded.program.demos] == [d["text"] for d in rounds[2]["record"]["beam"][0]["demos"]]

    # Rerun: everything is recorded, nothing is called again.
    again = run_m3(cfg, out, progress=False, models=models)
    assert again["optimize"] == 0 and again["eval"] == 0
    with pytest.raises(LbtError, match="different run"):
        run_m3(M3Config.from_dict({**cfg.to_dict(), "rounds": 3}), out, progress=False, models=models)


# --- any program: custom fields, several labels, the default adapter, the metric ------------------------
def test_paper_setting_gives_the_recorded_rounds():
    """The Yes/No paper setting, run through the general optimizer, gives the round records, best demos and
    the very prompts recorded from the code before the generalisation (tests/fixtures/m3_golden_rounds.json)."""
    import m3_golden

    want = json.loads(m3_golden.FIXTURE.read_text())
    got = json.loads(json.dumps(m3_golden.golden_runs(), sort_keys=True))
    assert set(got) == set(want)
    def drop_output_counts(obj):  # counts added after the recording: what the models said (all parsed here)
        if isinstance(obj, dict):
            for key in ("unparsed", "cut_off", "empty"):
                if key in obj and ("total" in obj or "preds" in obj):  # call counts and test-set evaluations
                    assert obj.pop(key) == 0, obj
            for value in obj.values():
                drop_output_counts(value)
        elif isinstance(obj, list):
            for value in obj:
                drop_output_counts(value)

    drop_output_counts(got)
    for name in want:
        for part in want[name]:
            assert got[name][part] == want[name][part], f"{name}: {part} differs from the recorded run"


SENTIMENT = {"good": "positive", "bad": "negative", "meh": "neutral"}
SENT_TRAIN = [dspy.Example(sentence=f"{w}-{i}", sentiment=lab).with_inputs("sentence")
              for i in range(4) for w, lab in SENTIMENT.items()]


def _chat_input(messages, field="sentence"):
    """The value of `field` in the last user message of a ChatAdapter prompt."""
    return messages[-1]["content"].split(f"[[ ## {field} ## ]]\n", 1)[1].split("\n")[0].strip()


def _chat_answer(value, field="sentiment"):
    return f"[[ ## {field} ## ]]\n{value}\n\n[[ ## completed ## ]]"


def sentiment_student(wrong: set):
    def fn(messages):
        s = _chat_input(messages)
        right = SENTIMENT[s.split("-")[0]]
        return _chat_answer("neutral" if s in wrong and right != "neutral" else right.capitalize())
    return fn


def sentiment_teacher(messages):
    content = messages[0]["content"]
    if "[[ ## sentence ## ]]" in messages[-1]["content"]:  # classifying (ChatAdapter): right on the demos' sentences
        s = _chat_input(messages)
        shown = any(m["content"].startswith(f"[[ ## sentence ## ]]\n{s}\n") or m["content"] == f"[[ ## sentence ## ]]\n{s}"
                    for m in messages[:-1] if m["role"] == "user")
        return _chat_answer(SENTIMENT[s.split("-")[0]] if shown else "neutral")
    cases = re.findall(r'## Failure Case \d+\nSentence: "(.*?)"\nSentiment: (\w+)', content)
    if "reasons why these examples" in content:
        return f"<START>The examples never show sentences like {', '.join(sorted(t for t, _ in cases))}.<END>"
    if "the problem with the current in-context examples is that" in content:
        return "<START>\n" + "\n\n".join(f"Sentence: {t}\nSentiment: {y}" for t, y in sorted(cases)) + "\n<END>"
    assert 'a line "Sentence: ..." followed by a line "Sentiment: negative", "Sentiment: neutral" or ' \
           '"Sentiment: positive"' in content and "8 labelled learning examples" not in content
    return "<START>\nSentence: good-0\nSentiment: positive\n\nSentence: meh-0\nSentiment: neutral\n<END>"


def test_multiclass_program_with_its_own_fields_compiles_and_runs_under_the_default_adapter(tmp_path):
    teacher, t_engine = scripted_lm("teacher", sentiment_teacher)
    a, a_engine = scripted_lm("student-a", sentiment_student({"good-1", "bad-2"}))
    b, _ = scripted_lm("student-b", sentiment_student({"bad-3"}))
    program = dspy.Predict("sentence -> sentiment")  # DSPy's boilerplate instructions
    opt = LbTOptimizer(students=[a, b], num_examples=4, rounds=1, beam_size=2, minibatch_size=12,
                       reflections_per_set=2, score_sample_size=12, num_threads=2)
    tuned = opt.compile(program, trainset=SENT_TRAIN, teacher=teacher)

    assert opt.fields.inputs == ("sentence",) and opt.fields.output == "sentiment"
    assert opt.fields.labels == ("negative", "neutral", "positive")  # three labels, not Yes/No
    # The question the teacher sees is made from the fields, not DSPy's "Given the fields ..." boilerplate.
    write = next(p for p in t_engine.prompts if "I need a list of" in p)
    assert "Given the sentence, give the sentiment: negative, neutral, positive." in write
    # Students' failures (answers normalised to labels) reach the reflection with the program's field names.
    r1 = opt.history[1]
    exams = {e["student"]: sorted(SENT_TRAIN[i].sentence for i in e["failed"]) for e in r1["exams"]}
    assert exams == {"student-a": ["bad-2", "good-1"], "student-b": ["bad-3"]}
    reflect = next(p for p in t_engine.prompts if "reasons why these examples" in p)
    assert 'Sentence: "good-1"\nSentiment: positive\nPrediction: neutral' in reflect
    assert "### Example 1\n**Sentence:** good-0\n**Sentiment:** positive" in reflect
    new = [c for c in r1["candidates"] if c["origin"] == "rewrite"]
    assert new and all(set(d) == {"sentence", "sentiment"} for c in new for d in c["demos"])

    # Tuned under the default adapter: a plain copy of the program, marked compiled, that runs as it is.
    assert type(tuned) is dspy.Predict and tuned._compiled and not getattr(program, "_compiled", False)
    assert [(d.sentence, d.sentiment) for d in tuned.demos] == \
        [(d["sentence"], d["sentiment"]) for d in r1["beam"][0]["demos"]]
    shown = tuned.demos[0]
    with dspy.context(lm=teacher):
        assert tuned(sentence=shown.sentence).sentiment == shown.sentiment
    path = tmp_path / "tuned.json"
    tuned.save(str(path))
    loaded = dspy.Predict("sentence -> sentiment")
    loaded.load(str(path))
    assert [(d["sentence"], d["sentiment"]) for d in loaded.demos] == [(d.sentence, d.sentiment) for d in tuned.demos]
    with dspy.context(lm=teacher):
        assert loaded(sentence=shown.sentence).sentiment == shown.sentiment


def test_the_metric_decides_failures_and_scores():
    calls = []

    def lenient(example, pred, trace=None):  # "neutral" counts as half right
        calls.append((example.sentence, pred.sentiment))
        if pred.sentiment == example.sentiment:
            return 1.0
        return 0.5 if pred.sentiment == "neutral" else 0.0

    teacher, _ = scripted_lm("teacher", sentiment_teacher)
    a, _ = scripted_lm("student-a", sentiment_student({"good-1", "bad-2"}))
    opt = LbTOptimizer(lenient, students=[a], num_examples=4, rounds=1, beam_size=2, minibatch_size=12,
                       reflections_per_set=1, score_sample_size=12, num_threads=2)
    opt.compile(dspy.Predict("sentence -> sentiment"), trainset=SENT_TRAIN, teacher=teacher)
    assert calls and all(isinstance(p, str) for _, p in calls)
    assert ("good-1", "neutral") in calls  # predictions reach the metric as labels ("Neutral" -> "neutral")
    # Round 0 (demos good-0, meh-0): the teacher is right on good-0 and on the 4 neutral sentences, and answers
    # neutral on the 7 others (half right each): (5 + 3.5) / 12 under the metric, where accuracy says 5 / 12.
    assert opt.history[0]["beam"][0]["score"] == pytest.approx(8.5 / 12)
    # A failure is a metric below 1: student a's two mistakes (each 0.5) are failures.
    assert sorted(SENT_TRAIN[i].sentence for i in opt.history[1]["exams"][0]["failed"]) == ["bad-2", "good-1"]
    acc = LbTOptimizer(lenient, students=[a], num_examples=4, rounds=0, score_sample_size=12, score_metric="accuracy")
    acc.compile(dspy.Predict("sentence -> sentiment"), trainset=SENT_TRAIN, teacher=teacher)
    assert acc.history[0]["beam"][0]["score"] == pytest.approx(5 / 12)


def test_students_can_be_programs_and_free_text_uses_token_f1():
    from lbt_dspy.m3 import TaskFields, token_f1

    a, a_engine = scripted_lm("student-a", sentiment_student(set()))
    student_program = dspy.Predict("sentence -> sentiment")
    student_program.set_lm(a)
    teacher, _ = scripted_lm("teacher", sentiment_teacher)
    opt = LbTOptimizer(students=[student_program], num_examples=4, rounds=1, minibatch_size=6,
                       reflections_per_set=1, score_sample_size=6, num_threads=2)
    opt.compile(dspy.Predict("sentence -> sentiment"), trainset=SENT_TRAIN, teacher=teacher)
    assert len(a_engine.prompts) == 6  # the program student took the exam on its own LM
    assert opt.history[1]["exams"][0]["student"] == "Predict(student-a)"
    # Free text: many distinct answers are no label set; token F1 scores them.
    qa = [dspy.Example(question=f"q{i}", answer=f"answer number {i}").with_inputs("question") for i in range(6)]
    fields = TaskFields.from_program(dspy.Predict("question -> answer"), qa)
    assert fields.labels is None and fields.label_of("  free text ") == "free text"
    assert token_f1("answer")(qa[0], dspy.Prediction(answer="answer 0")) == pytest.approx(0.8)


def test_fields_from_programs_and_trainsets():
    from lbt_dspy.m3 import TaskFields

    yes_no = TaskFields.from_program(make_classifier(QUESTION), TRAIN)
    assert yes_no.yes_no and yes_no.inputs == ("text",) and yes_no.label_of(1) == "Yes"
    three = [dspy.Example(text=f"t{i}", label=["a", "b", "c"][i % 3]).with_inputs("text") for i in range(9)]
    assert TaskFields.from_program(make_classifier(QUESTION), three).labels == ("a", "b", "c")  # not Yes/No
    cot = dspy.ChainOfThought("premise, hypothesis -> relation")
    nli = [dspy.Example(premise="p", hypothesis="h", relation=r).with_inputs("premise", "hypothesis")
           for r in ["entails", "contradicts"] * 3]
    f = TaskFields.from_program(cot, nli)
    assert f.inputs == ("premise", "hypothesis") and f.output == "relation"  # not the CoT's reasoning
    assert f.example_format() == ('Write each example as lines "Premise: ..." and "Hypothesis: ..." followed by '
                                  'a line "Relation: contradicts" or "Relation: entails".')
    with pytest.raises(ValueError, match=r"trainset\[0\]: needs 'premise', 'hypothesis', 'relation'"):
        TaskFields.from_program(cot, [dspy.Example(premise="p", relation="x")])


def test_config_declares_the_hyperparameters_once():
    from dataclasses import fields as dc_fields

    from lbt_dspy.m3 import LbTOptimizerConfig

    lbt = {f.name for f in dc_fields(LbTOptimizerConfig)}
    assert lbt <= {f.name for f in dc_fields(M3Config)}  # inherited, not repeated
    cfg = M3Config.from_dict({"rounds": 2, "beam_size": 3, "score_metric": "f1"})
    opt = LbTOptimizer(config=cfg, seed=5)
    assert (opt.rounds, opt.beam_size, opt.score_metric, opt.seed) == (2, 3, "f1", 5)
    with pytest.raises(ValueError, match="beam_size must be an integer >= 1"):
        LbTOptimizer(beam_size=0)
    with pytest.raises(TypeError, match="unexpected arguments: beam"):
        LbTOptimizer(beam=2)
    with pytest.raises(TypeError, match="students="):
        LbTOptimizer([object()])
    with pytest.raises(LbtError, match="config: score_metric must be one of metric, accuracy, f1"):
        M3Config.from_dict({"score_metric": "auc"})


def test_an_m3_run_directory_from_before_the_record_layer_reads_and_resumes(tmp_path, capsys):
    """tests/fixtures/m3_old_run was written before M3's calls were recorded (summaries only). `lbt report` reads
    it as it did (the same tables as its report.md); rerun, it is recomputed into the same rounds and test
    evaluations, now with every call recorded."""
    import shutil
    from pathlib import Path

    import yaml

    from lbt_dspy.cli import main
    from lbt_dspy.m3.report import baseline_table, calls_table, f1_table, search_table, summarize

    old = Path(__file__).parent / "fixtures" / "m3_old_run"
    run = tmp_path / "run"
    shutil.copytree(old, run)
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    s = summarize(run)
    report = (old / "report.md").read_text()
    for table in (f1_table(s), f1_table(s, "student-a"), baseline_table(s), calls_table(s), search_table(s)):
        assert table in report
    assert main(["select", str(run)]) == 0 and f1_table(s) in capsys.readouterr().out
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before  # reading changed nothing

    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["dataset_cfg"]["data_dir"] = str(run / "data")  # the directory moved with its data
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    import m3_golden as g  # the scripted LMs the directory was made with

    models = _Models(g._lm("teacher", g._teacher)[0], g._lm("teacher", g._teacher)[0],
                     [g._lm("student-a", g._student({"pos-1", "pos-2"}))[0],
                      g._lm("student-b", g._student({"neg-2", "pos-3"}))[0]])
    calls = run_m3(M3Config.from_dict(saved), run, progress=False, models=models)
    assert calls["optimize"] and calls["failed"] == 0

    def lines(path, drop=("seconds",)):
        return [{k: v for k, v in json.loads(x).items() if k not in drop} for x in path.read_text().splitlines()]

    for stage in ("rounds", "eval"):
        got, want = lines(run / f"{stage}.jsonl"), lines(old / f"{stage}.jsonl")
        if stage == "rounds":
            got, want = ([{**r, "record": {k: v for k, v in r["record"].items() if k != "seconds"}} for r in x]
                         for x in (got, want))
        assert got == want
    assert len(lines(run / "invocations.jsonl")) == 2
    assert len(lines(run / "exam.jsonl")) > 0 and len(lines(run / "teach.jsonl")) > 0


def test_an_example_set_s_lbt_score_is_the_students_exam_on_labelled_examples(world):
    """The parts M3 shares with M1: `Student`s running the tuned program (their answer, the label) take an
    `LbTScore` exam of training examples graded by a `ClassificationScorer`; its records say which student failed
    on which example. A failed call is left out with skip_failed, raised without."""
    from lbt_dspy import FixedExamMaker, LbTScore, Student
    from lbt_dspy.m3.fields import TEXT_LABEL
    from lbt_dspy.scoring import ClassificationScorer

    program, adapter = make_classifier(QUESTION), ClassifierAdapter()
    train = [TEXT_LABEL.example(e) for e in TRAIN]
    students = [Student(lm, adapter, program=program, answer_field="label") for lm in world["students"]]
    assert [s.name for s in students] == ["student-a", "student-b"] and students[0].input_fields == ("text",)
    demos = train[:1] + train[6:7]
    exam = LbTScore(students, FixedExamMaker(train), ClassificationScorer(TEXT_LABEL))
    res = exam(demos=demos, slots=[1, 2, 3, 8])
    failed = {name: sorted(train[i].text for i, rec in got.items() if rec["score"] < 1)
              for name, got in res.records.items()}
    assert failed == {"student-a": ["pos-1", "pos-2"], "student-b": ["neg-2", "pos-3"]}
    assert res.per_student == {"student-a": 0.5, "student-b": 0.5} and res.score == 0.5
    assert res.exam["student-a"]["answers"] == ["No", "No", "Yes", "No"]  # the label, in slot order
    prompt = world["engines"]["a"].prompts[0]
    assert "**Text:** pos-0\n**Label:** Yes" in prompt and "**Text:** neg-0\n**Label:** No" in prompt  # taught

    def flaky(messages):
        if "pos-3" in messages[0]["content"].rsplit("Text: ", 1)[1]:
            raise RuntimeError("boom")
        return "Yes"

    lm, _ = scripted_lm("flaky", flaky)
    flaky_exam = LbTScore([Student(lm, adapter, program=program, answer_field="label")], FixedExamMaker(train),
                          ClassificationScorer(TEXT_LABEL), skip_failed=True)
    res = flaky_exam(demos=demos, slots=[1, 3, 8])
    assert sorted(res.records["flaky"]) == [1, 8] and res.score == 0.5  # pos-3 left out; neg-2 said Yes
    with pytest.raises(Exception, match="boom"):
        LbTScore(flaky_exam.students, FixedExamMaker(train), ClassificationScorer(TEXT_LABEL))(demos=demos, slots=[3])

    # A program that is not one Predict (here a program student on its own LM) is taught through a copy of it.
    class Twice(dspy.Module):
        def __init__(self):
            super().__init__()
            self.first = make_classifier(QUESTION)

        def forward(self, text):
            return self.first(text=text)

    own = Twice()
    own.set_lm(world["students"][1])
    student = Student(program=own, adapter=adapter, answer_field="label")
    assert student.name == "Twice(student-b)"
    assert student(text="neg-2", demos=demos).label == "Yes" and not own.first.demos  # the program is untouched
    scorer = ClassificationScorer(TEXT_LABEL, metric=lambda ex, pred, trace=None: 0.25 if pred.label == "Yes" else 1)
    assert scorer.score(" yes!", train[0]) == 0.25 and scorer.score("No", train[0]) == 1.0
