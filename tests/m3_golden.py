"""Golden round records of the paper's Yes/No M3 setting, recorded from the code before M3 was generalised.

`golden_runs()` runs `LbTOptimizer` and `run_m3` on a scripted teacher and students in several settings and
returns every round record (wall time left out) and every prompt each scripted LM received (sorted, since
threads interleave). ``tests/fixtures/m3_golden_rounds.json`` holds the result of the code at commit cd8c508
(before the generalisation); `tests/test_m3.py::test_paper_setting_gives_the_recorded_rounds` compares.

Regenerate (only when a change of the records is intended): ``.venv/bin/python tests/m3_golden.py``.
"""

from __future__ import annotations

import json
import re
import sys
import tempfile
import threading
from pathlib import Path

import dspy
from dspy.lm15 import Message, Response, TextPart, Usage

FIXTURE = Path(__file__).parent / "fixtures" / "m3_golden_rounds.json"
QUESTION = "Is the number positive?"


class _Engine:
    def __init__(self, fn):
        self.fn, self.prompts, self.lock = fn, [], threading.Lock()

    def complete(self, request):
        messages = [{"role": m.role, "content": m.text or ""} for m in request.messages]
        with self.lock:
            self.prompts.append(json.dumps(messages))
        return Response(id=None, model="scripted", message=Message.assistant([TextPart(self.fn(messages))]),
                        finish_reason="stop", usage=Usage(input_tokens=1, output_tokens=1))

    def stream(self, request):
        from dspy.lm15 import response_to_events

        return response_to_events(self.complete(request))

    def close(self):
        pass


def _lm(name, fn):
    engine = _Engine(fn)
    lm = dspy.LM(f"openai/{name}", engine=engine, cache=False, num_retries=0)
    lm.lbt_name = name
    return lm, engine


def _exam_text(content):
    return content.rsplit("Text: ", 1)[1].split("\n")[0]


def _student(wrong):
    def fn(messages):
        text = _exam_text(messages[0]["content"])
        right = "Yes" if text.startswith("pos") else "No"
        return ({"Yes": "No", "No": "Yes"}[right] if text in wrong else right) + "\n"
    return fn


def _cases(content):
    return re.findall(r'## Failure Case \d+\nText: "(.*?)"\nLabel: (Yes|No)', content)


def _teacher(messages):
    content = messages[0]["content"]
    if content.startswith("# Task"):
        text = _exam_text(content)
        return "Yes" if f"**Text:** {text}\n**Label:** Yes" in content else "No"
    if "reasons why these examples" in content:
        return f"<START>The examples do not cover cases such as {', '.join(sorted(t for t, _ in _cases(content)))}.<END>"
    if "the problem with the current in-context examples is that" in content:
        return "<START>\n" + "\n\n".join(f"Text: {t}\nLabel: {y}" for t, y in sorted(_cases(content))) + "\n<END>"
    if "I need a list of" in content:
        return "Here you go.\n<START>\nText: pos-0\nLabel: Yes\n\nText: neg-0\nLabel: No\n<END>"
    raise AssertionError(content[:200])


TRAIN = ([dspy.Example(text=f"pos-{i}", label=1) for i in range(6)]
         + [dspy.Example(text=f"neg-{i}", label=0) for i in range(6)])

SETTINGS = {
    "gen_two_students": dict(num_examples=4, init_method="gen", rounds=2, beam_size=2, minibatch_size=12,
                             reflections_per_set=3, failures_per_reflection=4, expansion_factor=8,
                             score_sample_size=12, num_threads=4, seed=0),
    "train_init_students_f1": dict(num_examples=4, init_method="train", rounds=2, beam_size=2, minibatch_size=8,
                                   reflections_per_set=4, failures_per_reflection=2, expansion_factor=3,
                                   scorer="students", score_metric="f1", score_sample_size=10, num_threads=4,
                                   seed=3, reason_max_new_tokens=9),
    "self_student": dict(num_examples=4, rounds=2, beam_size=2, minibatch_size=12, reflections_per_set=2,
                         failures_per_reflection=2, score_sample_size=12, num_threads=2, seed=1),
}


def _digest(prompt: str) -> str:
    import hashlib

    return hashlib.sha256(prompt.encode()).hexdigest()[:16]


def _strip(record):
    return {k: v for k, v in record.items() if k != "seconds"}


def _optimizer(cls, adapter_cls, students, kw):
    """The paper's setting: the Yes/No program under the patch's prompt. (Recorded with the API before the
    generalisation, ``LbTOptimizer(students, **kw)`` whose default adapter was the patch's; the generalised
    API spells the same setting with keywords.)"""
    import inspect

    if "metric" not in inspect.signature(cls.__init__).parameters:  # the code the fixture was recorded from
        kw = {("reason_max_tokens" if k == "reason_max_new_tokens" else k): v for k, v in kw.items()}
        return cls(students, **kw)
    return cls(students=students, classifier_adapter=adapter_cls(), **kw)


def golden_runs() -> dict:
    from lbt_dspy.m3 import ClassifierAdapter, LbTOptimizer, make_classifier

    out = {}
    for name, kw in SETTINGS.items():
        teacher, t_engine = _lm("teacher", _teacher)
        a, a_engine = _lm("student-a", _student({"pos-1", "pos-2"}))
        b, b_engine = _lm("student-b", _student({"neg-2", "pos-3"}))
        students = None if name == "self_student" else [a, b]
        opt = _optimizer(LbTOptimizer, ClassifierAdapter, students, kw)
        program = opt.compile(make_classifier(QUESTION), trainset=TRAIN, teacher=teacher)
        out[name] = {"rounds": [_strip(r) for r in opt.history],
                     "demos": [[d.text, d.label] for d in program.predictors()[0].demos],
                     "prompts": {k: sorted(_digest(p) for p in e.prompts) for k, e in
                                 (("teacher", t_engine), ("student-a", a_engine), ("student-b", b_engine))}}
    out["run_m3"] = _run_m3_records()
    return out


def _run_m3_records() -> dict:
    from lbt_dspy.m3.config import M3Config
    from lbt_dspy.m3.run import _Models, run_m3

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rows = [{"label": 1, "text": f"pos-{i}"} for i in range(6)] + [{"label": 0, "text": f"neg-{i}"} for i in range(6)]
        (tmp / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        test = [{"label": 1, "text": f"pos-{i}"} for i in range(1, 5)] + [{"label": 0, "text": "neg-9"}]
        (tmp / "test.jsonl").write_text("".join(json.dumps(r) + "\n" for r in test))
        cfg = M3Config.from_dict({
            "dataset_type": "jsonl", "question": QUESTION, "dataset_cfg": {"data_dir": str(tmp)},
            "student_model_cfgs": [{"model_type": "openai", "model_cfg": {"model": "a"}},
                                   {"model_type": "openai", "model_cfg": {"model": "b"}}],
            "num_examples": 4, "rounds": 2, "beam_size": 2, "minibatch_size": 12, "reflections_per_set": 2,
            "score_sample_size": 12, "random_draws": 2, "eval_students": True, "concurrency": 4, "cache": False})
        teacher, _ = _lm("teacher", _teacher)
        classifier, _ = _lm("teacher", _teacher)
        a, _ = _lm("student-a", _student({"pos-1", "pos-2"}))
        b, _ = _lm("student-b", _student({"neg-2", "pos-3"}))
        run_m3(cfg, tmp / "run", progress=False, models=_Models(teacher, classifier, [a, b]))
        rounds = [json.loads(x) for x in (tmp / "run" / "rounds.jsonl").read_text().splitlines()]
        for r in rounds:
            r["record"] = _strip(r["record"])
        evals = [json.loads(x) for x in (tmp / "run" / "eval.jsonl").read_text().splitlines()]
        return {"rounds": rounds, "eval": evals}


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[1]))
    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    FIXTURE.parent.mkdir(exist_ok=True)
    FIXTURE.write_text(json.dumps(golden_runs(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
