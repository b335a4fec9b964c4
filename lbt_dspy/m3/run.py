"""`lbt m3 CFG`: optimise in-context examples the LbT way, evaluate test F1 after every round, with baselines.

Configurations (each an `LbTOptimizer` run with the same teacher and seeds):

- ``LbT``: the configured students take the exams.
- ``self``: the teacher is its own only student (APO-style self-reflection; baseline ``self``). When the
  configured students are exactly the classifying teacher, ``self`` *is* the LbT run and is not run twice.

Baselines without optimisation: zero-shot, K random training examples, and "always Yes" (no LM call). Test F1
is the teacher's (the paper's measure), and the students' too with ``eval_students``.

The run directory (resumable, `RunStore`): ``config.yaml``; ``rounds.jsonl`` (one record per configuration
and round: candidates, scores, reflections, rewrites, which student failed where, LM calls); ``eval.jsonl``
(test F1 of the best set per round, and baselines); ``best_program_<configuration>.json`` (DSPy's JSON);
``report.md``, ``summary.json`` and PNGs (`report.write_report`).
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from pathlib import Path

from ..model_output import OutputCounts
from ..models import ModelPool
from ..store import RunStore
from .adapters import STEERING_PREFILLS, ClassifierAdapter, TeacherAdapter
from .classify import Classifier
from .config import M3Config
from .formats import demo_dicts
from .metrics import summary
from .optimizer import LbTOptimizer, unique_names
from .signatures import make_classifier
from .tasks import load_task

log = logging.getLogger("lbt_dspy")


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
        self.student_names = unique_names(students)


def build_models(cfg: M3Config, pool: ModelPool) -> _Models:
    teacher = pool.lm(cfg.teacher_model_cfg, cfg.teacher_sample_cfg, where="teacher_model_cfg")
    classifier = pool.lm(cfg.teacher_model_cfg, cfg.classify_sample_cfg, where="teacher_model_cfg")
    students = [pool.lm(e, cfg.classify_sample_cfg, where=f"student_model_cfgs[{i}]")
                for i, e in enumerate(cfg.student_model_cfgs)]
    return _Models(teacher, classifier, students)


def run_m3(cfg: M3Config, output_path: str | Path, progress: bool = True, log_dir: str | None = None,
           models: _Models | None = None) -> dict:
    """Run (or resume) M3 into `output_path`; returns LM call counts and wall time.

    Args:
        cfg: The configuration.
        output_path: The run directory.
        progress: tqdm bars and one line per round.
        log_dir: Where started model servers write logs.
        models: Ready LMs (tests); None builds them from `cfg` with a `ModelPool`.
    """
    t0 = time.monotonic()
    task = load_task(cfg.dataset_type, cfg.question, **cfg.dataset_cfg)
    train = subsample(task.train, cfg.train_size, f"{cfg.seed}/train")
    test = subsample(task.test, cfg.test_size, f"{cfg.seed}/test")
    store = RunStore(output_path, cfg.to_dict())
    store.write_json("data.json", {"task": task.name, "question": task.question,
                                   "train": demo_dicts(train),
                                   "test_labels": [e.label for e in test], "train_size": len(train),
                                   "test_size": len(test), "self_is_lbt": self_is_lbt(cfg)})
    calls = {"optimize": 0, "eval": 0, "cached": 0, "failed": 0}
    started = time.strftime("%Y-%m-%d %H:%M:%S")
    try:
        if models is not None:
            _run(cfg, store, task.question, train, test, models, calls, progress)
        else:
            with ModelPool(cache=cfg.cache, num_retries=cfg.num_retries, log_dir=log_dir) as pool:
                _run(cfg, store, task.question, train, test, build_models(cfg, pool), calls, progress)
        calls["seconds"] = round(time.monotonic() - t0, 1)
        store.append("invocations", {"key": f"{started}/{len(store.load('invocations'))}", "started": started,
                                     **calls})
    finally:
        store.close()
    return calls


def _run(cfg, store, question, train, test, models: _Models, calls: dict, progress: bool) -> None:
    program = make_classifier(question)
    evaluated = store.load("eval")

    lock = threading.Lock()

    def count(role, failed, cached, pred=None):
        with lock:
            calls["eval"] += 1
            calls["failed"] += failed
            calls["cached"] += cached

    clf = Classifier(program, ClassifierAdapter(), cfg.concurrency, progress, on_call=count)
    evaluators = [("teacher", models.classifier)]
    if cfg.eval_students:
        evaluators += list(zip(models.student_names, models.students))
    labels = [e.label for e in test]

    def evaluate(key_prefix: str, demos: list, meta: dict, desc: str) -> None:
        for ev_name, lm in evaluators:
            key = f"{key_prefix}/{ev_name}"
            if key in evaluated:
                continue
            before, cached_before = calls["eval"], calls["cached"]
            full = clf.many([(demos, lm, e.text) for e in test], "test", f"{desc} ({ev_name})", full=True)
            preds = [None if p is None else p[clf.fields.output] for p in full]
            answers = OutputCounts.of(p for p in full if p is not None)  # what the model said, as data
            rec = {"key": key, **meta, "evaluator": ev_name, **summary(labels, preds),
                   "calls": calls["eval"] - before, "cached": calls["cached"] - cached_before, "preds": preds,
                   "unparsed": answers.unparsed, "cut_off": answers.cut_off, "empty": answers.empty}
            store.append("eval", rec)
            evaluated[key] = rec

    # Baselines first: they are cheap and give the reference points.
    if "zero_shot" in cfg.baselines:
        evaluate("baseline/zero_shot", [], {"baseline": "zero_shot"}, "zero-shot on test")
    if "random" in cfg.baselines:
        for d in range(cfg.random_draws):
            demos = random.Random(f"{cfg.seed}/random/{d}").sample(train, min(cfg.num_examples, len(train)))
            evaluate(f"baseline/random{d}", demos, {"baseline": "random", "draw": d, "demos": demo_dicts(demos)},
                     f"random K draw {d} on test")

    configurations = [("LbT", models.students, models.student_names)]
    if "self" in cfg.baselines and not self_is_lbt(cfg):
        configurations.append(("self", [models.classifier], ["teacher"]))
    def evaluate_best(name: str, record: dict) -> None:  # test F1 of a round's best set
        best, r = record["beam"][0], record["round"]
        evaluate(f"{name}/{r}", best["demos"], {"config": name, "round": r, "best": best["id"],
                                                "train_score": best["score"]}, f"{name} round {r} on test")

    rounds_done = store.load("rounds")
    for name, students, student_names in configurations:
        prior = []
        while f"{name}/{len(prior)}" in rounds_done and len(prior) <= cfg.rounds:
            prior.append(rounds_done[f"{name}/{len(prior)}"]["record"])

        def on_round(record, name=name, student_names=student_names):
            r = record["round"]
            calls["optimize"] += record["calls"]["total"]
            calls["failed"] += record["calls"]["failed"]
            calls["cached"] += record["calls"].get("cached", 0)
            store.append("rounds", {"key": f"{name}/{r}", "config": name, "students": student_names,
                                    "record": record})
            evaluate_best(name, record)
            if progress:
                f1 = evaluated[f"{name}/{r}/teacher"]["f1"]
                score = record["beam"][0]["score"]
                score_txt = f"{score:.3f}" if score is not None else "n/a"
                from tqdm.auto import tqdm

                tqdm.write(f"{name} round {r}: best train score {score_txt}, test F1 {100 * f1:.1f}, "
                           f"LM calls {record['calls']['total']}, {record['seconds']:.0f} s")

        optimizer = LbTOptimizer(
            students=students, config=cfg, teacher_classifier=models.classifier, classifier_adapter=ClassifierAdapter(),
            teacher_adapter=TeacherAdapter(STEERING_PREFILLS if cfg.teacher_prefill else None),
            num_threads=cfg.concurrency, history=prior, on_round=on_round, progress=progress)
        best = optimizer.compile(program, trainset=train, teacher=models.teacher)
        for record in optimizer.history:  # rounds stored by an interrupted run but not yet evaluated
            evaluate_best(name, record)
        best.save(str(store.path / f"best_program_{name}.json"))


__all__ = ["run_m3", "build_models", "self_is_lbt", "subsample"]
