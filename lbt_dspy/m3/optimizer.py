"""`LbTOptimizer`: the paper's M3, a teleprompter that optimises K in-context examples of a Yes/No classifier.

It is ProTeGi/APO beam search in which the *students* take the exams: in every round each example set in
the beam is used by every student on a minibatch of training texts; the students' failures (pooled) go to
the teacher, who gives reasons why the examples led to them (reflection) and rewrites the examples for each
reason; the new sets, deduplicated, join the beam and every set is scored (by the teacher classifying a train
sample, as in the paper, or by the students); the best `beam_size` sets survive.

Every round is a plain dict in `LbTOptimizer.history` (candidates, scores, reflections, which student failed
on which training example, LM calls) and is handed to `on_round` as soon as it is done, so a run can store
it and later resume from it (`history=`). All randomness is seeded per round, so a resumed run draws the same
minibatches as an uninterrupted one, and DSPy's cache answers the calls it already made.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

import dspy
from dspy.teleprompt.teleprompt import Teleprompter

from .adapters import ClassifierAdapter, TeacherAdapter
from .classify import Classifier, thread_map, traced_call, with_demos
from .formats import (NO, YES, as_demos, demo_dicts, demos_key, parse_examples, parse_reasons, render_examples,
                      render_failures, to_label)
from .metrics import METRICS
from .signatures import EXAMPLE_FORMAT, GenerateExamples, ReflectOnFailures, RewriteExamples

log = logging.getLogger("lbt_dspy")

ROLES = ("teacher_write", "teacher_reflect", "student_exam", "score")


@dataclass
class Candidate:
    """One set of K examples in the beam search."""

    id: str
    demos: list  # dspy.Example(text=..., label="Yes"/"No")
    parent: str | None = None
    reason: str | None = None
    origin: str = "init"  # init | rewrite
    score: float | None = None
    n_scored: int = 0

    def key(self) -> tuple:
        return demos_key(self.demos)

    def to_dict(self) -> dict:
        return {"id": self.id, "parent": self.parent, "origin": self.origin, "reason": self.reason,
                "score": self.score, "n_scored": self.n_scored, "demos": demo_dicts(self.demos)}

    @classmethod
    def from_dict(cls, d: dict) -> "Candidate":
        return cls(d["id"], as_demos(d["demos"]), d.get("parent"), d.get("reason"), d.get("origin", "init"),
                   d.get("score"), d.get("n_scored", 0))


class _Calls:
    """Thread-safe count of LM calls issued, by role; ``cached``: how many of them DSPy's cache answered."""

    def __init__(self):
        self._lock = threading.Lock()
        self.counts: Counter = Counter()
        self.failed = 0
        self.cached = 0

    def add(self, role: str, failed: bool = False, cached: bool = False) -> None:
        with self._lock:
            self.counts[role] += 1
            self.failed += failed
            self.cached += cached

    def snapshot(self) -> dict:
        with self._lock:
            out = {role: self.counts.get(role, 0) for role in ROLES}
            out["total"] = sum(out.values())
            out["failed"] = self.failed
            out["cached"] = self.cached
            return out


def lm_name(lm, default: str) -> str:
    return getattr(lm, "lbt_name", None) or getattr(lm, "model", None) or default


def unique_names(lms: list) -> list[str]:
    """The students' names for records and reports; a name that repeats gets ``#<index>``."""
    names: list[str] = []
    for i, lm in enumerate(lms):
        name = lm_name(lm, f"student{i}")
        names.append(f"{name}#{i}" if name in names else name)
    return names


class LbTOptimizer(Teleprompter):
    """M3: optimise the K in-context examples of a Yes/No classifier with a teacher and several students.

    Defaults are the paper's (the patch's flags): K = 8, 5 rounds, beam 4, minibatch 64, 4 reflections per
    set with at most 4 failure cases each, one reason per reflection, at most 8 new sets per set, scoring by
    the teacher's accuracy on ``eval_budget / #candidates`` training examples.

    Args:
        students: The LMs that take the exams (their failures drive the teacher). None: the classifying
            teacher is its own only student (APO-style self-reflection).
        num_examples: K, examples per set.
        init_method: ``"gen"`` (the teacher writes the first set) or ``"train"`` (K/2 random positive and
            K - K/2 random negative training examples, shuffled).
        rounds: Expansion rounds after the initial round 0.
        beam_size: Example sets kept after each round.
        minibatch_size: Training texts the students are examined on per round.
        reflections_per_set: Reflection calls per set in the beam (the patch's ``n_gradients``).
        failures_per_reflection: Failure cases shown in one reflection (``errors_per_gradient``).
        reasons_per_reflection: Reasons asked for per reflection (``gradients_per_error``); each reason gives
            one rewrite, i.e. one new set.
        expansion_factor: At most this many new sets per set (random subset beyond it).
        dedupe: Drop new sets identical (same texts and labels, same order) to one already in the beam/round.
        scorer: ``"teacher"`` (the paper: the teacher classifies a train sample with each set) or
            ``"students"`` (mean over the students).
        score_sample_size: Training texts per candidate when scoring; None: ``eval_budget // #candidates``.
        eval_budget: The patch's scoring budget (2048 = 32 samples x 8 prompts x 8 rounds).
        score_metric: ``"accuracy"`` (the patch's ``01`` scorer) or ``"f1"``.
        reason_max_tokens: Token cap of a reflection (reasons are short); None: the teacher LM's setting (the
            patch: the same 1024 as for writing examples).
        teacher_classifier: The LM that classifies for the teacher (scoring; default: the teacher LM). Give
            a separate greedy LM when the teacher writes with temperature > 0, as the paper does.
        classifier_adapter: The classification prompt (default: the patch's, `ClassifierAdapter`).
        teacher_adapter: The teacher's prompts (default `TeacherAdapter()`).
        init_attempts: Tries of the ``gen`` init before falling back to ``train`` init.
        num_threads: Concurrent LM calls.
        seed: Seed of all sampling (minibatches, failure cases, scoring samples, init).
        history: Round records of an interrupted run; compile continues after the last one.
        on_round: Called with each new round record as soon as the round is done.
        progress: Show tqdm bars.

    Example:
        >>> optimizer = LbTOptimizer(students=[student_lm], rounds=2, beam_size=2)  # doctest: +SKIP
        >>> program = optimizer.compile(make_classifier(question), trainset=train, teacher=teacher_lm)  # doctest: +SKIP
        >>> program.save("best.json")  # doctest: +SKIP
    """

    def __init__(self, students: list | None = None, *, num_examples: int = 8, init_method: str = "gen",
                 rounds: int = 5, beam_size: int = 4, minibatch_size: int = 64, reflections_per_set: int = 4,
                 failures_per_reflection: int = 4, reasons_per_reflection: int = 1, expansion_factor: int = 8,
                 dedupe: bool = True, scorer: str = "teacher", score_sample_size: int | None = None,
                 eval_budget: int = 2048, score_metric: str = "accuracy", reason_max_tokens: int | None = None,
                 teacher_classifier=None,
                 classifier_adapter: dspy.Adapter | None = None, teacher_adapter: dspy.Adapter | None = None,
                 init_attempts: int = 3, num_threads: int = 16, seed: int = 0, history: list[dict] | None = None,
                 on_round: Callable[[dict], Any] | None = None, progress: bool = False):
        super().__init__()
        if init_method not in ("gen", "train"):
            raise ValueError(f"init_method must be 'gen' or 'train', got {init_method!r}")
        if scorer not in ("teacher", "students"):
            raise ValueError(f"scorer must be 'teacher' or 'students', got {scorer!r}")
        if score_metric not in METRICS:
            raise ValueError(f"score_metric must be one of {sorted(METRICS)}, got {score_metric!r}")
        for name, val in (("num_examples", num_examples), ("beam_size", beam_size), ("minibatch_size", minibatch_size),
                          ("failures_per_reflection", failures_per_reflection), ("num_threads", num_threads),
                          ("expansion_factor", expansion_factor), ("init_attempts", init_attempts)):
            if val < 1:
                raise ValueError(f"{name} must be >= 1, got {val}")
        if rounds < 0 or reflections_per_set < 0 or reasons_per_reflection < 1:
            raise ValueError("rounds and reflections_per_set must be >= 0, reasons_per_reflection >= 1")
        self.students = list(students) if students else None
        self.num_examples = num_examples
        self.init_method = init_method
        self.rounds = rounds
        self.beam_size = beam_size
        self.minibatch_size = minibatch_size
        self.reflections_per_set = reflections_per_set
        self.failures_per_reflection = failures_per_reflection
        self.reasons_per_reflection = reasons_per_reflection
        self.expansion_factor = expansion_factor
        self.dedupe = dedupe
        self.scorer = scorer
        self.score_sample_size = score_sample_size
        self.eval_budget = eval_budget
        self.score_metric = score_metric
        self.reason_max_tokens = reason_max_tokens
        self.teacher_classifier = teacher_classifier
        self.classifier_adapter = classifier_adapter or ClassifierAdapter()
        self.teacher_adapter = teacher_adapter or TeacherAdapter()
        self.init_attempts = init_attempts
        self.num_threads = num_threads
        self.seed = seed
        self.history: list[dict] = [dict(r) for r in (history or [])]
        self.on_round = on_round
        self.progress = progress
        self._calls = _Calls()

    # --- the teleprompter API ----------------------------------------------------------------------
    def compile(self, student: dspy.Module, *, trainset: list, teacher=None, valset: list | None = None,
                **kwargs) -> dspy.Module:
        """Optimise `student`'s demos; returns a copy of it carrying the best example set.

        Args:
            student: A Yes/No classification program (input ``text``, output ``label``), e.g.
                `make_classifier(question)`; its instructions are the question the teacher sees.
            trainset: Examples with ``text`` and ``label`` (0/1 or Yes/No): exam minibatches, scoring
                samples and (``init_method="train"``) the first set.
            teacher: The teacher LM (writes, reflects, rewrites; classifies when scoring, unless
                ``teacher_classifier`` is set). None: ``dspy.settings.lm``.
            valset: When given, candidates are scored on samples of it instead of the trainset.
        """
        if kwargs:
            raise TypeError(f"compile() got unexpected arguments: {', '.join(kwargs)}")
        teacher_lm = teacher if teacher is not None else dspy.settings.lm
        if teacher_lm is None:
            raise ValueError("no teacher: pass teacher= or configure dspy.settings.lm")
        if not isinstance(teacher_lm, dspy.BaseLM):
            raise TypeError("teacher must be a dspy LM (the teacher writes the examples), "
                            f"got {type(teacher_lm).__name__}")
        if not student.predictors():
            raise ValueError("student has no predictors to carry demos")
        self._teacher = teacher_lm
        self._classifier = self.teacher_classifier or teacher_lm
        self._students = self.students or [self._classifier]
        self._student_names = unique_names(self._students)
        self._clf = Classifier(student, self.classifier_adapter, self.num_threads, self.progress,
                               on_call=lambda role, failed, cached: self._calls.add(role, failed, cached))
        self._question = student.predictors()[0].signature.instructions
        self._train = self._normalize(trainset, "trainset")
        self._score_pool = self._normalize(valset, "valset") if valset else self._train

        start = len(self.history)
        if start:
            beam = [Candidate.from_dict(c) for c in self.history[-1]["beam"]]
        for r in range(start, self.rounds + 1):
            t0 = time.monotonic()
            self._calls = _Calls()
            record = self._round0() if r == 0 else self._expand_and_select(r, beam)
            beam = [Candidate.from_dict(c) for c in record["beam"]]
            record["calls"] = self._calls.snapshot()
            record["seconds"] = round(time.monotonic() - t0, 2)
            self.history.append(record)
            if self.on_round is not None:
                self.on_round(record)
        return with_demos(student, beam[0].demos)

    @property
    def best_per_round(self) -> list[dict]:
        """The best candidate (a dict with ``demos`` and ``score``) after each round so far."""
        return [r["beam"][0] for r in self.history]

    # --- rounds ------------------------------------------------------------------------------------
    def _round0(self) -> dict:
        record: dict = {"round": 0, "init_method": self.init_method}
        demos = []
        if self.init_method == "gen":
            attempts = []
            for attempt in range(self.init_attempts):
                out = self._teacher_call(GenerateExamples, "teacher_write", rollout_id=attempt,
                                         question=self._question, num_examples=self.num_examples,
                                         example_format=EXAMPLE_FORMAT)
                text = out.examples if out is not None else None
                demos = parse_examples(text or "", limit=self.num_examples)
                attempts.append({"response": text, "parsed": len(demos)})
                if demos:
                    break
            record["init_attempts"] = attempts
            if not demos:
                log.warning("M3: the teacher's initial examples did not parse; falling back to init 'train'")
                record["init_fallback"] = "train"
        if not demos:
            demos = self._train_init()
        cand = Candidate("r0.0", demos)
        self._score([cand], 0, record)
        record["candidates"] = [cand.to_dict()]
        record["beam"] = [cand.to_dict()]
        return record

    def _train_init(self) -> list:
        rng = random.Random(f"{self.seed}/0/init")
        pos = [e for e in self._train if e.label == YES]
        neg = [e for e in self._train if e.label == NO]
        n_pos = self.num_examples - self.num_examples // 2
        if len(pos) < n_pos or len(neg) < self.num_examples // 2:
            raise ValueError(f"init 'train' needs {n_pos} positive and {self.num_examples // 2} negative examples")
        demos = rng.sample(pos, n_pos) + rng.sample(neg, self.num_examples // 2)
        rng.shuffle(demos)
        return [dspy.Example(text=d.text, label=d.label).with_inputs("text") for d in demos]

    def _expand_and_select(self, r: int, beam: list[Candidate]) -> dict:
        rng = random.Random(f"{self.seed}/{r}/expand")
        train = self._train
        batch = rng.sample(range(len(train)), min(self.minibatch_size, len(train)))
        record: dict = {"round": r, "minibatch": batch}

        # 1. Exams: every student classifies the minibatch with every set of the beam.
        jobs = [(cand, s, idx) for cand in beam for s in range(len(self._students)) for idx in batch]
        preds = self._clf.many([(c.demos, self._students[s], train[i].text) for c, s, i in jobs],
                               "student_exam", f"round {r}: exams")
        failures: dict[str, dict[int, dict]] = {c.id: {} for c in beam}
        exams = {(c.id, s): {"candidate": c.id, "student": self._student_names[s], "failed": [], "answered": 0}
                 for c in beam for s in range(len(self._students))}
        for (cand, s, idx), pred in zip(jobs, preds):
            if pred is None:
                continue
            exam = exams[(cand.id, s)]
            exam["answered"] += 1
            if pred != train[idx].label:
                exam["failed"].append(idx)
                case = failures[cand.id].setdefault(idx, {"idx": idx, "text": train[idx].text,
                                                          "label": train[idx].label, "pred": pred, "students": []})
                case["students"].append(self._student_names[s])
        record["exams"] = list(exams.values())

        # 2. Reflections: the teacher explains sampled (pooled) failures of each set.
        refl_jobs = []
        for cand in beam:
            pool = list(failures[cand.id].values())
            if not pool:
                continue
            for j in range(self.reflections_per_set):
                sample = rng.sample(pool, min(self.failures_per_reflection, len(pool)))
                refl_jobs.append((cand, j, sample))
        outs = thread_map(lambda job: self._teacher_call(
            ReflectOnFailures, "teacher_reflect", rollout_id=job[1], question=self._question,
            num_examples=self.num_examples, current_examples=render_examples(job[0].demos),
            failures=render_failures(job[2]), num_reasons=self.reasons_per_reflection),
            refl_jobs, self.num_threads, f"round {r}: reflections", self.progress)
        reflections, rewrite_jobs = [], []
        for (cand, j, sample), out in zip(refl_jobs, outs):
            text = out.reasons if out is not None else None
            reasons = parse_reasons(text or "")[: self.reasons_per_reflection]
            reflections.append({"candidate": cand.id, "index": j, "failures": [f["idx"] for f in sample],
                                "failed_students": sorted({s for f in sample for s in f["students"]}),
                                "response": text, "reasons": reasons})
            rewrite_jobs.extend((cand, j, k, sample, reason) for k, reason in enumerate(reasons))
        record["reflections"] = reflections

        # 3. Rewrites: one new set per reason.
        outs = thread_map(lambda job: self._teacher_call(
            RewriteExamples, "teacher_write", rollout_id=job[1] * 100 + job[2], question=self._question,
            num_examples=self.num_examples, current_examples=render_examples(job[0].demos),
            failures=render_failures(job[3]), reason=job[4], example_format=EXAMPLE_FORMAT),
            rewrite_jobs, self.num_threads, f"round {r}: rewrites", self.progress)
        rewrites, new_by_parent = [], {c.id: [] for c in beam}
        for (cand, j, k, sample, reason), out in zip(rewrite_jobs, outs):
            text = out.examples if out is not None else None
            demos = parse_examples(text or "", limit=self.num_examples)
            entry = {"candidate": cand.id, "reflection": j, "reason": reason, "response": text,
                     "parsed": len(demos), "new": None}
            if demos:
                new = Candidate(f"r{r}.{len(rewrites) + 1}", demos, parent=cand.id, reason=reason, origin="rewrite")
                entry["new"] = new.id
                new_by_parent[cand.id].append(new)
            rewrites.append(entry)
        record["rewrites"] = rewrites

        # 4. At most expansion_factor new sets per set; duplicates dropped.
        dropped = {"unparsed": sum(1 for e in rewrites if e["new"] is None), "over_expansion": 0, "duplicates": 0}
        seen = {c.key(): c.id for c in beam}
        new_cands = []
        for cand in beam:
            news = new_by_parent[cand.id]
            if len(news) > self.expansion_factor:
                dropped["over_expansion"] += len(news) - self.expansion_factor
                keep = set(id(n) for n in rng.sample(news, self.expansion_factor))
                news = [n for n in news if id(n) in keep]
            for n in news:
                if self.dedupe and n.key() in seen:
                    dropped["duplicates"] += 1
                    next(e for e in rewrites if e["new"] == n.id)["duplicate_of"] = seen[n.key()]
                    continue
                seen[n.key()] = n.id
                new_cands.append(n)
        record["dropped"] = dropped
        record["new"] = [c.id for c in new_cands]

        # 5. Score incumbents and newcomers; keep the best beam_size (ties: incumbents first).
        candidates = list(beam) + new_cands
        self._score(candidates, r, record)
        ranked = sorted(candidates, key=lambda c: -(c.score if c.score is not None else -1.0))
        record["candidates"] = [c.to_dict() for c in candidates]
        record["beam"] = [c.to_dict() for c in ranked[: self.beam_size]]
        return record

    def _score(self, candidates: list[Candidate], r: int, record: dict) -> None:
        pool = self._score_pool
        n = self.score_sample_size or max(1, self.eval_budget // max(1, len(candidates)))
        idx = random.Random(f"{self.seed}/{r}/score").sample(range(len(pool)), min(n, len(pool)))
        scorers = [self._classifier] if self.scorer == "teacher" else self._students
        jobs = [(c, lm, i) for c in candidates for lm in scorers for i in idx]
        preds = self._clf.many([(c.demos, lm, pool[i].text) for c, lm, i in jobs], "score",
                               f"round {r}: scoring {len(candidates)} set(s)")
        metric = METRICS[self.score_metric]
        by_cand: dict = {}
        for (c, lm, i), pred in zip(jobs, preds):
            if pred is not None:
                by_cand.setdefault((c.id, id(lm)), ([], []))
                by_cand[(c.id, id(lm))][0].append(pool[i].label)
                by_cand[(c.id, id(lm))][1].append(pred)
        for c in candidates:
            parts = [by_cand.get((c.id, id(lm))) for lm in scorers]
            parts = [p for p in parts if p and p[0]]
            c.score = sum(metric(ys, ps) for ys, ps in parts) / len(parts) if parts else None
            c.n_scored = sum(len(p[0]) for p in parts)
        record["score_sample"] = idx

    # --- LM calls ----------------------------------------------------------------------------------
    def _normalize(self, examples: list, what: str) -> list:
        out = []
        for n, ex in enumerate(examples):
            try:
                out.append(dspy.Example(text=ex["text"], label=to_label(ex["label"])).with_inputs("text"))
            except (KeyError, TypeError):
                raise ValueError(f"{what}[{n}]: needs 'text' and 'label'") from None
        if not out:
            raise ValueError(f"{what} is empty")
        return out

    def _teacher_call(self, signature, role: str, rollout_id: int = 0, **inputs):
        config = {"rollout_id": rollout_id}
        if signature is ReflectOnFailures and self.reason_max_tokens is not None:
            config["max_tokens"] = self.reason_max_tokens
        try:
            out, cached = traced_call(lambda: dspy.Predict(signature)(**inputs, config=config), lm=self._teacher,
                                      adapter=self.teacher_adapter)
        except Exception as exc:  # a failed call gives no reason / no set; the round goes on
            self._calls.add(role, failed=True)
            log.warning("M3 teacher call failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return None
        self._calls.add(role, cached=cached)
        return out
