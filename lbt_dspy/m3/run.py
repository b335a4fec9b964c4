"""`lbt m3 CFG`: optimise in-context examples the LbT way, evaluate test F1 after every round, with baselines.

Configurations (each an `LbTOptimizer` run with the same teacher and seeds): ``LbT`` (the configured students
take the exams) and ``self`` (the teacher is its own only student: APO-style self-reflection; when the configured
students are exactly the classifying teacher, ``self`` *is* the LbT run and is not run twice). Baselines without
optimisation: zero-shot, K random training examples, and "always Yes" (no LM call). Test F1 is the teacher's
(the paper's measure), and the students' too with ``eval_students``: each, taught by the set, takes the test
set as an exam (`LbTScore`).

The optimizer and the test evaluations run inside a `record_scope`, as `lbt m1` runs `M1`: every LM call is
replayed from the run directory when recorded there, else made and appended as soon as it finishes
(``teach.jsonl``: the teacher's answers; ``exam.jsonl``: every classification; keyed ``<configuration>/<round>/
<step>/...``, the baselines ``baseline/<name>/...``). A killed run resumes, never asks again for a finished call,
and its rounds are an uninterrupted run's. Summaries, rewritten as they are recomputed: ``rounds.jsonl`` (per
configuration and round: candidates, scores, reflections, rewrites, which student failed where, LM calls),
``eval.jsonl`` (test F1 of each round's best set, and of the baselines); also ``best_program_<configuration>.json``
(DSPy's JSON), ``invocations.jsonl`` (one line per finished invocation), and `report.write_report`'s report.md,
summary.json and PNGs. A directory from before the calls were recorded (summaries only) reads as it did; its
rerun recomputes it.
"""

from __future__ import annotations

import json
import random
import threading
import time
from pathlib import Path

from ..exam import FixedExamMaker
from ..lbt_score import LbTScore
from ..model_output import OutputCounts
from ..models import ModelPool
from ..runner import CallPool, Recorder, record_scope, using_pool
from ..scoring.classification import ClassificationScorer
from ..store import RunStore, encode_line
from ..student import Student
from .adapters import STEERING_PREFILLS, ClassifierAdapter, TeacherAdapter
from .config import M3Config
from .fields import TEXT_LABEL
from .metrics import summary
from .optimizer import LbTOptimizer, requests, students_of
from .signatures import make_classifier
from .tasks import load_task

# What a resume checks in the records it reads (a bad line: file:line, exit 2).
RECORD_FIELDS = {"teach": ("tp", "answer"), "exam": ("tp", "student", "slot", "answer", "score")}


def subsample(examples: list, size: int | None, seed: str) -> list:
    """A seeded random subset of `size` examples (all of them, in order, when size is None or too large)."""
    if size is None or size >= len(examples):
        return list(examples)
    return random.Random(seed).sample(examples, size)


def _entry_key(entry: dict, default_sample: dict) -> str:
    """What makes two model entries the same classifier: model and merged sampling settings."""
    model = {k: v for k, v in entry.items() if k != "sample_cfg"}
    sample = {**default_sample, **(entry.get("sample_cfg") or {})}
    return json.dumps([model, sample], sort_keys=True, default=str)


def self_is_lbt(cfg: M3Config) -> bool:
    """True when the only student is the teacher classifying with the same settings (LbT = self-reflection)."""
    return (len(cfg.student_model_cfgs) == 1 and
            _entry_key(cfg.student_model_cfgs[0], cfg.classify_sample_cfg)
            == _entry_key(cfg.teacher_model_cfg, cfg.classify_sample_cfg))


class _Models:
    """The run's LMs: teacher (writes), classifier (the teacher classifying) and students."""

    def __init__(self, teacher, classifier, students: list):
        self.teacher, self.classifier, self.students = teacher, classifier, students


def build_models(cfg: M3Config, pool: ModelPool) -> _Models:
    teacher = pool.lm(cfg.teacher_model_cfg, cfg.teacher_sample_cfg, where="teacher_model_cfg")
    classifier = pool.lm(cfg.teacher_model_cfg, cfg.classify_sample_cfg, where="teacher_model_cfg")
    students = [pool.lm(e, cfg.classify_sample_cfg, where=f"student_model_cfgs[{i}]")
                for i, e in enumerate(cfg.student_model_cfgs)]
    return _Models(teacher, classifier, students)


def run_m3(cfg: M3Config, output_path: str | Path, progress: bool = True, log_dir: str | None = None,
           models: _Models | None = None) -> dict:
    """Run (or resume) M3 into `output_path`; returns this invocation's LM requests (``optimize``, ``eval``),
    the calls answered without one (``cached``: DSPy's cache, or the run's records), ``failed`` and wall time.

    Args:
        cfg: The configuration.
        output_path: The run directory.
        progress: A progress bar and one line per round.
        log_dir: Where started model servers write logs.
        models: Ready LMs (tests); None builds them from `cfg` with a `ModelPool`.
    """
    t0 = time.monotonic()
    task = load_task(cfg.dataset_type, cfg.question, **cfg.dataset_cfg)
    train = subsample(task.train, cfg.train_size, f"{cfg.seed}/train")
    test = subsample(task.test, cfg.test_size, f"{cfg.seed}/test")
    store = RunStore(output_path, cfg.to_dict(), required=RECORD_FIELDS)
    store.write_json("data.json", {"task": task.name, "question": task.question, "train": TEXT_LABEL.dicts(train),
                                   "test_labels": [e.label for e in test], "train_size": len(train),
                                   "test_size": len(test), "self_is_lbt": self_is_lbt(cfg)})
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        if models is not None:
            calls = _run(cfg, store, task.question, train, test, models, progress)
        else:
            with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries, log_dir=log_dir) as pool:
                calls = _run(cfg, store, task.question, train, test, build_models(cfg, pool), progress)
        calls["seconds"] = round(time.monotonic() - t0, 1)
        store.append("invocations", {"key": f"{started}/{len(store.load('invocations'))}", "started": started,
                                     **calls})
    finally:
        store.close()
    return calls


def _run(cfg, store, question, train, test, models: _Models, progress: bool) -> dict:
    from tqdm.auto import tqdm

    program, adapter, scorer = make_classifier(question), ClassifierAdapter(), ClassificationScorer(TEXT_LABEL)
    calls = {"optimize": 0, "eval": 0, "cached": 0, "failed": 0}
    summaries = {stage: store.load(stage) for stage in ("rounds", "eval")}  # replaced as they are recomputed
    bar = tqdm(total=None, desc="lbt m3", disable=not progress, dynamic_ncols=True, unit="call")
    lock = threading.Lock()

    def tick(stage):
        with lock:
            bar.update(1)
    recorder = Recorder(store, on_new=tick)

    def summarize(stage: str, rec: dict) -> None:
        summaries[stage][rec["key"]] = rec
        store.write_text(f"{stage}.jsonl", "".join(encode_line(r).decode("utf-8") for r in summaries[stage].values()))

    students = students_of(models.students, program, adapter, "label")
    evaluators = [Student(models.classifier, adapter, "teacher", program, "label")] + (
        students if cfg.eval_students else [])
    tests = [LbTScore([ev], FixedExamMaker(test), scorer, skip_failed=True) for ev in evaluators]
    labels = [e.label for e in test]

    def evaluate(tp: str, pair: str, key: str, demos: list, meta: dict) -> None:
        """Test F1 of `demos` for each evaluator: the evaluator, taught by them, classifies the test set."""
        for lbt in tests:
            name = lbt.students[0].name
            with requests() as made, record_scope(recorder, tp=tp, pair=pair):
                got = lbt(demos=demos).records[name]
            preds = [scorer.extract(got[i]["answer"]) if i in got else None for i in range(len(test))]
            answers = OutputCounts.of(got.values())  # what the model said, as data
            summarize("eval", {"key": f"{key}/{name}", **meta, "evaluator": name, **summary(labels, preds),
                               "calls": len(test), "cached": len(got) - made[0], "preds": preds,
                               "unparsed": answers.unparsed, "cut_off": answers.cut_off, "empty": answers.empty})
            calls["eval"] += len(test) - (len(got) - made[0])
            calls["cached"] += len(got) - made[0]
            calls["failed"] += len(test) - len(got)

    run_pool = CallPool(cfg.concurrency)  # every LM call of the run, `concurrency` at a time
    try:
        with using_pool(run_pool):
            # Baselines first: they are cheap and give the reference points.
            if "zero_shot" in cfg.baselines:
                evaluate("baseline", "zero_shot", "baseline/zero_shot", [], {"baseline": "zero_shot"})
            if "random" in cfg.baselines:
                for d in range(cfg.random_draws):
                    demos = random.Random(f"{cfg.seed}/random/{d}").sample(train, min(cfg.num_examples, len(train)))
                    evaluate("baseline", f"random{d}", f"baseline/random{d}", demos,
                             {"baseline": "random", "draw": d, "demos": TEXT_LABEL.dicts(demos)})

            configurations = [("LbT", models.students, [s.name for s in students])]
            if "self" in cfg.baselines and not self_is_lbt(cfg):
                configurations.append(("self", [models.classifier], ["teacher"]))
            for name, lms, student_names in configurations:
                def on_round(record, name=name, student_names=student_names):
                    r, best = record["round"], record["beam"][0]
                    summarize("rounds", {"key": f"{name}/{r}", "config": name, "students": student_names,
                                         "record": record})
                    calls["optimize"] += record["calls"]["total"] - record["calls"]["cached"]
                    calls["cached"] += record["calls"]["cached"]
                    calls["failed"] += record["calls"]["failed"]
                    evaluate(name, f"{r}/test", f"{name}/{r}", [TEXT_LABEL.example(d) for d in best["demos"]],
                             {"config": name, "round": r, "best": best["id"], "train_score": best["score"]})
                    if progress:
                        f1 = summaries["eval"][f"{name}/{r}/teacher"]["f1"]
                        score = "n/a" if best["score"] is None else f"{best['score']:.3f}"
                        tqdm.write(f"{name} round {r}: best train score {score}, test F1 {100 * f1:.1f}, "
                                   f"LM calls {record['calls']['total']}, {record['seconds']:.0f} s")

                optimizer = LbTOptimizer(
                    students=lms, config=cfg, teacher_classifier=models.classifier, classifier_adapter=adapter,
                    teacher_adapter=TeacherAdapter(STEERING_PREFILLS if cfg.teacher_prefill else None),
                    num_threads=cfg.concurrency, on_round=on_round)
                with record_scope(recorder, tp=name):
                    best = optimizer.compile(program, trainset=train, teacher=models.teacher)
                best.save(str(store.path / f"best_program_{name}.json"))
    finally:
        bar.close()
        run_pool.close()
    if run_pool.down is not None:
        raise run_pool.down
    return calls


__all__ = ["run_m3", "build_models", "self_is_lbt", "subsample"]
