"""`LbTOptimizer`: the paper's M3, a teleprompter that optimises the K in-context examples of a DSPy program.

Any program: its input and output fields are read from its signature, its labels from the trainset (the
paper's Yes/No, any label set, or free text scored by the metric; `fields.TaskFields`). It is ProTeGi/APO beam
search in which the *students* take the exams: in every round each example set in the beam teaches every
student, who takes an exam on a minibatch of training texts (`LbTScore`, the LbT score of an example set); the
students' failures (pooled) go to the teacher, who gives reasons why the examples led to them (reflection) and
rewrites the examples for each reason; the new sets, deduplicated, join the beam and every set is scored (an
`LbTScore` too: by the teacher classifying a train sample, as in the paper, or by the students); the best
`beam_size` sets survive.

Every round is a plain dict in `LbTOptimizer.history` (candidates, scores, reflections, which student failed
on which training example, LM calls), also handed to `on_round` as soon as it is done. All randomness is seeded
per round and every LM call goes through the record layer (`lbt_dspy.runner.recorded`): compiled inside a
`record_scope`, a rerun replays the calls recorded and makes only the others, and its rounds are an
uninterrupted run's.
"""

from __future__ import annotations

import logging
import random
import time
from contextlib import contextmanager
from dataclasses import dataclass, fields, replace
from typing import Any, Callable

import dspy
from dspy.teleprompt.teleprompt import Teleprompter
from dspy.utils.usage_tracker import UsageTracker
from tqdm.auto import tqdm

from ..counting import CallCounter
from ..errors import LbtEnvironmentError, backend_down
from ..exam import FixedExamMaker
from ..lbt_score import LbTScore
from ..model_output import predict_or_unparsed
from ..records import OUTPUT_FLAGS
from ..runner import bounded, branches, parallel, record_scope, recorded
from ..scoring.classification import ClassificationScorer
from ..student import Student, with_demos
from .adapters import ClassifierAdapter, TeacherAdapter
from .config import LbTOptimizerConfig
from .fields import TEXT_LABEL, TaskFields
from .formats import NO, YES, parse_examples, parse_reasons, render_examples, render_failures
from .metrics import accuracy, binary_f1, macro_f1
from .signatures import GenerateExamples, ReflectOnFailures, RewriteExamples
from .tuned import WithAdapter

log = logging.getLogger("lbt_dspy")

ROLES = ("teacher_write", "teacher_reflect", "student_exam", "score")


@dataclass(frozen=True)
class Candidate:
    """One set of K examples in the beam search, with its score once scored."""

    id: str
    demos: list  # dspy.Example with the program's fields, e.g. text=..., label="Yes"/"No"
    parent: str | None = None
    reason: str | None = None
    origin: str = "init"  # init | rewrite
    score: float | None = None
    n_scored: int = 0
    fields: TaskFields = TEXT_LABEL

    def key(self) -> tuple:
        return self.fields.key(self.demos)

    def to_dict(self) -> dict:
        return {"id": self.id, "parent": self.parent, "origin": self.origin, "reason": self.reason,
                "score": self.score, "n_scored": self.n_scored, "demos": self.fields.dicts(self.demos)}


@dataclass(frozen=True)
class Reflect:
    """One reflection of a round: the teacher explains `failures` (sampled exam failures) of a candidate's set;
    `index` numbers the reflections of one set (its rollout id)."""

    candidate: Candidate
    index: int
    failures: list


@dataclass(frozen=True)
class Rewrite:
    """One rewrite: the teacher rewrites the set of `reflection` for its `reason_index`-th `reason`."""

    reflection: Reflect
    reason_index: int
    reason: str

    def rollout_id(self, reasons_per_reflection: int) -> int:
        """Distinct for every (reflection, reason) of a set: their prompts may coincide, their samples must not."""
        return self.reflection.index * reasons_per_reflection + self.reason_index


def calls_record(calls: CallCounter) -> dict:
    """A round's LM calls as its record keeps them: per role (`ROLES`), total, failed, cached (answered without a
    request: DSPy's cache, or the run's records when resumed), and the answers that were unparsed, cut off or
    empty."""
    snap = calls.snapshot()
    return {**{role: snap["by_kind"].get(role, 0) for role in ROLES}, "total": snap["total"],
            **{k: snap[k] for k in ("failed", "cached", "unparsed", "cut_off", "empty")}}


@contextmanager
def requests():
    """Counts the LM requests made inside (in every thread it starts): calls DSPy's cache or the run's records
    answered make none (a server that reports no token usage would also look cached)."""
    tracker = UsageTracker()
    count = [0]
    with dspy.context(usage_tracker=tracker):
        yield count
    count[0] = sum(len(v) for v in tracker.usage_data.values())


def students_of(lms: list, program: dspy.Module, adapter: dspy.Adapter, output: str) -> list[Student]:
    """`Student`s for LMs (the program runs on them) or programs (they run on their own LMs); a name that
    repeats gets ``#<index>``."""
    out: list[Student] = []
    for i, lm in enumerate(lms):
        own = isinstance(lm, dspy.Module)
        student = Student(None if own else lm, adapter, program=lm if own else program, answer_field=output)
        if student.name in [s.name for s in out]:
            student.name = f"{student.name}#{i}"
        out.append(student)
    return out


class LbTOptimizer(Teleprompter):
    """M3: optimise the K in-context examples of any DSPy program with a teacher and several students.

    In every round the students take exams (a training minibatch) with each example set of the beam; the
    examples they fail (``metric`` below 1) go to the teacher, who reflects on why the examples led to them
    and rewrites the examples; sets are scored on a training sample and the best ``beam_size`` survive.
    The hyperparameters are `LbTOptimizerConfig`'s fields (K = ``num_examples``, ``rounds``, ``beam_size``...;
    the paper's defaults), given as keyword arguments or as ``config=``.

    Args:
        metric: ``metric(example, pred, trace=None)`` as DSPy optimizers take it: a failure is a score below 1,
            and (``score_metric="metric"``) a set's score is the mean. It sees the answer, as a label, in the
            output field. None: exact match on the output field (labels compared after `TaskFields.label_of`;
            free text case- and whitespace-insensitively). `lbt_dspy.m3.metrics.token_f1` scores free text by
            token F1.
        students: Who takes the exams: LMs (the program runs on them) or programs (they run with the demos on
            their own LMs); each becomes a `Student`. None: the classifying teacher is its own only student
            (APO-style self-reflection).
        config: An `LbTOptimizerConfig` (or `M3Config`); keyword arguments override its fields.
        teacher_classifier: The LM that classifies for the teacher (scoring; default: the teacher LM). Give a
            separate greedy LM when the teacher writes with temperature > 0, as the paper does.
        classifier_adapter: The adapter programs run under while being tuned. None: the one in effect at
            compile time (``dspy.settings.adapter``, else ChatAdapter), and the compiled program is a plain copy.
            Given (e.g. `ClassifierAdapter()`, the patch's prompt, which small models follow): the compiled
            program is a `WithAdapter` that runs under it. A `ClassifierAdapter` is bound to the task's fields.
        teacher_adapter: The teacher's prompts (default `TeacherAdapter()`).
        num_threads: Concurrent LM calls (inside a run, the run's ``concurrency``).
        on_round: Called with each new round record as soon as the round is done.
        progress: One line per round.
        **hyperparameters: `LbTOptimizerConfig` fields.

    Every LM call is recorded inside a record scope (`lbt_dspy.runner.record_scope`, keyed ``tp/<round>/...``:
    the teacher's as ``teach``, the students' and the scorer's as ``exam``), so compiling again in the same scope
    resumes: what finished is replayed, the rest is made.

    Example:
        >>> import dspy
        >>> from lbt_dspy.m3 import LbTOptimizer
        >>> program = dspy.Predict("sentence -> sentiment")
        >>> optimizer = LbTOptimizer(students=[student_lm], num_examples=4, rounds=2, beam_size=2)  # doctest: +SKIP
        >>> tuned = optimizer.compile(program, trainset=train, teacher=teacher_lm)  # doctest: +SKIP
        >>> tuned(sentence="What a lovely day").sentiment  # doctest: +SKIP
        'positive'
        >>> tuned.save("best.json")  # doctest: +SKIP
        >>> with record_scope(Recorder(RunStore("runs/sentiment", {})), tp="sentiment"):  # resumable  # doctest: +SKIP
        ...     tuned = optimizer.compile(program, trainset=train, teacher=teacher_lm)
    """

    def __init__(self, metric: Callable | None = None, students: list | None = None, *,
                 config: LbTOptimizerConfig | None = None, teacher_classifier=None,
                 classifier_adapter: dspy.Adapter | None = None, teacher_adapter: dspy.Adapter | None = None,
                 num_threads: int = 16, on_round: Callable[[dict], Any] | None = None, progress: bool = False,
                 **hyperparameters):
        super().__init__()
        if metric is not None and not callable(metric):
            raise TypeError(f"metric must be callable (metric(example, pred, trace=None)), got {type(metric).__name__}"
                            "; pass the students as students=[...]")
        if "history" in hyperparameters:
            raise TypeError("LbTOptimizer: history= is gone; compile inside lbt_dspy.runner.record_scope(...) to "
                            "resume (the calls recorded are replayed)")
        known = {f.name for f in fields(LbTOptimizerConfig)}
        unknown = [k for k in hyperparameters if k not in known]
        if unknown:
            raise TypeError(f"LbTOptimizer got unexpected arguments: {', '.join(unknown)}")
        base = LbTOptimizerConfig(**(config.optimizer_kwargs() if config is not None else {}))
        self.config = replace(base, **hyperparameters)  # __post_init__ checks every value
        for name in known:  # read as attributes, like every DSPy optimizer's settings
            setattr(self, name, getattr(self.config, name))
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        self.metric = metric
        self.students = list(students) if students else None
        self.teacher_classifier = teacher_classifier
        self.classifier_adapter = classifier_adapter
        self.teacher_adapter = teacher_adapter or TeacherAdapter()
        self.num_threads = num_threads
        self.on_round = on_round
        self.progress = progress
        self.history: list[dict] = []
        self._calls = CallCounter()

    # --- the teleprompter API ----------------------------------------------------------------------
    def compile(self, student: dspy.Module, *, trainset: list, teacher=None, valset: list | None = None,
                **kwargs) -> dspy.Module:
        """Optimise `student`'s demos; returns a copy of it carrying the best example set (marked compiled).

        Args:
            student: Any DSPy program; its (first predictor's) input fields and the output field the trainset
                labels are what the examples hold. Its instructions are the question the teacher sees
                (unless DSPy's boilerplate; see `LbTOptimizerConfig.question`).
            trainset: Examples with the program's inputs and the output: exam minibatches, scoring samples
                and (``init_method="train"``) the first set.
            teacher: The teacher LM, or a program whose LM it is (writes, reflects, rewrites; classifies when
                scoring unless ``teacher_classifier`` is set). None: ``dspy.settings.lm``.
            valset: When given, candidates are scored on samples of it instead of the trainset.
        """
        if kwargs:
            raise TypeError(f"compile() got unexpected arguments: {', '.join(kwargs)}")
        teacher_lm = teacher if teacher is not None else dspy.settings.lm
        if isinstance(teacher_lm, dspy.Module):
            teacher_lm = next((p.lm for p in teacher_lm.predictors() if p.lm is not None), None) or dspy.settings.lm
        if teacher_lm is None:
            raise ValueError("no teacher: pass teacher= or configure dspy.settings.lm")
        if not isinstance(teacher_lm, dspy.BaseLM):
            raise TypeError("teacher must be a dspy LM or a program with one (the teacher writes the examples), "
                            f"got {type(teacher_lm).__name__}")
        if not student.predictors():
            raise ValueError("student has no predictors to carry demos")
        self.fields = TaskFields.from_program(student, list(trainset), self.output_field, self.labels)
        adapter = self.classifier_adapter
        if isinstance(adapter, ClassifierAdapter) and adapter.labels is None:
            adapter = adapter.bind(self.fields)
        self._adapter = adapter or dspy.settings.adapter or dspy.ChatAdapter()
        self._teacher = teacher_lm
        classifier = self.teacher_classifier or teacher_lm
        self._students = students_of(self.students or [classifier], student, self._adapter, self.fields.output)
        self._scorer = ClassificationScorer(self.fields, self.metric)
        self._question = self.question or self.fields.question(student.predictors()[0].signature)
        self._train = self._normalize(trainset, "trainset")
        self._score_pool = self._normalize(valset, "valset") if valset else self._train
        # The LbT score of an example set: the students' exam on the training set, and the scorers' on the pool.
        self._exam = LbTScore(self._students, FixedExamMaker(self._train), self._scorer, skip_failed=True)
        scorers = students_of([classifier], student, self._adapter, self.fields.output) \
            if self.scorer == "teacher" else self._students
        self._scoring = LbTScore(scorers, FixedExamMaker(self._score_pool), self._scorer, skip_failed=True)

        self.history, beam = [], []
        with bounded(self, self.num_threads):  # every call of the rounds shares one bound (a run's: its own)
            for r in range(self.rounds + 1):
                t0 = time.monotonic()
                self._calls = CallCounter()
                record, beam = self._round0() if r == 0 else self._expand_and_select(r, beam)
                record["calls"] = calls_record(self._calls)
                record["seconds"] = round(time.monotonic() - t0, 2)
                self.history.append(record)
                if record["calls"]["failed"]:
                    log.warning("M3 round %d: %d LM call(s) failed after retries (left out of the round; a rerun in "
                                "the same record scope asks them again)", r, record["calls"]["failed"])
                if self.progress:
                    tqdm.write(f"M3 round {r}: best score {beam[0].score}, {len(record['candidates'])} set(s) scored, "
                               f"{record['calls']['total']} LM calls, {record['seconds']:.0f} s")
                if self.on_round is not None:
                    self.on_round(record)
        program = with_demos(student, beam[0].demos)
        program._compiled = True
        if self.classifier_adapter is None:
            return program
        tuned = WithAdapter(program, self._adapter)
        tuned._compiled = True
        return tuned

    @property
    def best_per_round(self) -> list[dict]:
        """The best candidate (a dict with ``demos`` and ``score``) after each round so far."""
        return [r["beam"][0] for r in self.history]

    # --- rounds ------------------------------------------------------------------------------------
    def _round0(self) -> tuple[dict, list[Candidate]]:
        record: dict = {"round": 0, "init_method": self.init_method}
        demos = []
        if self.init_method == "gen":
            attempts = []
            for attempt in range(self.init_attempts):
                text = self._teach("teacher_write", f"0/write/{attempt}", GenerateExamples, rollout_id=attempt,
                                   question=self._question, num_examples=self.num_examples,
                                   example_kinds=self.fields.example_kinds(),
                                   example_format=self.fields.example_format())
                demos = parse_examples(text or "", limit=self.num_examples, fields=self.fields)
                attempts.append({"response": text, "parsed": len(demos)})
                if demos:
                    break
            record["init_attempts"] = attempts
            if not demos:
                log.warning("M3: the teacher's initial examples did not parse; falling back to init 'train'")
                record["init_fallback"] = "train"
        if not demos:
            demos = self._train_init()
        beam = self._score([Candidate("r0.0", demos, fields=self.fields)], 0, record)
        record["candidates"] = [c.to_dict() for c in beam]
        record["beam"] = [c.to_dict() for c in beam]
        return record, beam

    def _train_init(self) -> list:
        """K training examples: the patch's K/2 Yes + K/2 No; for other labels, one of each label in turn
        (every label gets a turn before any gets a second); for free text, K at random."""
        rng = random.Random(f"{self.seed}/0/init")
        out_field, k = self.fields.output, self.num_examples
        if self.fields.yes_no:
            pos = [e for e in self._train if e[out_field] == YES]
            neg = [e for e in self._train if e[out_field] == NO]
            n_pos = k - k // 2
            if len(pos) < n_pos or len(neg) < k // 2:
                raise ValueError(f"init 'train' needs {n_pos} positive and {k // 2} negative examples")
            demos = rng.sample(pos, n_pos) + rng.sample(neg, k // 2)
        elif self.fields.labels:
            groups = [[e for e in self._train if e[out_field] == label] for label in self.fields.labels]
            groups = [rng.sample(g, len(g)) for g in groups if g]
            demos = []
            while len(demos) < min(k, len(self._train)):
                for g in groups:
                    if g and len(demos) < k:
                        demos.append(g.pop())
        else:
            demos = rng.sample(self._train, min(k, len(self._train)))
        rng.shuffle(demos)
        return [self.fields.example(d) for d in demos]

    def _expand_and_select(self, r: int, beam: list[Candidate]) -> tuple[dict, list[Candidate]]:
        rng = random.Random(f"{self.seed}/{r}/expand")
        train = self._train
        batch = rng.sample(range(len(train)), min(self.minibatch_size, len(train)))
        record: dict = {"round": r, "minibatch": batch}

        # 1. Exams: every student, taught by each set of the beam, takes the minibatch (the set's LbT score).
        results = self._examine(self._exam, beam, batch, f"{r}/exam", "student_exam")
        failures: dict[str, dict[int, dict]] = {c.id: {} for c in beam}
        exams = []
        for cand, res in zip(beam, results):
            for student in self._students:
                got = res.records[student.name]
                exam = {"candidate": cand.id, "student": student.name, "failed": [], "answered": 0}
                for idx in batch:
                    if idx not in got:  # the call failed
                        continue
                    exam["answered"] += 1
                    if got[idx]["score"] < 1:  # a failure: the metric says not (fully) right
                        exam["failed"].append(idx)
                        case = failures[cand.id].setdefault(idx, {
                            "idx": idx, "example": train[idx], "pred": self._scorer.extract(got[idx]["answer"]),
                            "students": []})
                        case["students"].append(student.name)
                exams.append(exam)
        record["exams"] = exams

        # 2. Reflections: the teacher explains sampled (pooled) failures of each set.
        refl_jobs = []
        for cand in beam:
            pool = list(failures[cand.id].values())
            if not pool:
                continue
            for j in range(self.reflections_per_set):
                sample = rng.sample(pool, min(self.failures_per_reflection, len(pool)))
                refl_jobs.append(Reflect(cand, j, sample))
        outs = parallel([lambda job=job: self._teach(
            "teacher_reflect", f"{r}/reflect/{job.candidate.id}/{job.index}", ReflectOnFailures, rollout_id=job.index,
            question=self._question, num_examples=self.num_examples,
            current_examples=render_examples(job.candidate.demos, self.fields),
            failures=render_failures(job.failures, self.fields), num_reasons=self.reasons_per_reflection)
            for job in refl_jobs])
        reflections, rewrite_jobs = [], []
        for job, text in zip(refl_jobs, outs):
            reasons = parse_reasons(text or "")[: self.reasons_per_reflection]
            reflections.append({"candidate": job.candidate.id, "index": job.index,
                                "failures": [f["idx"] for f in job.failures],
                                "failed_students": sorted({s for f in job.failures for s in f["students"]}),
                                "response": text, "reasons": reasons})
            rewrite_jobs.extend(Rewrite(job, k, reason) for k, reason in enumerate(reasons))
        record["reflections"] = reflections

        # 3. Rewrites: one new set per reason.
        outs = parallel([lambda job=job: self._teach(
            "teacher_write", f"{r}/rewrite/{job.reflection.candidate.id}/{job.reflection.index}/{job.reason_index}",
            RewriteExamples, rollout_id=job.rollout_id(self.reasons_per_reflection),
            question=self._question, num_examples=self.num_examples,
            current_examples=render_examples(job.reflection.candidate.demos, self.fields),
            failures=render_failures(job.reflection.failures, self.fields), reason=job.reason,
            example_kinds=self.fields.example_kinds(), example_format=self.fields.example_format())
            for job in rewrite_jobs])
        rewrites, new_by_parent = [], {c.id: [] for c in beam}
        for job, text in zip(rewrite_jobs, outs):
            cand = job.reflection.candidate
            demos = parse_examples(text or "", limit=self.num_examples, fields=self.fields)
            entry = {"candidate": cand.id, "reflection": job.reflection.index, "reason": job.reason, "response": text,
                     "parsed": len(demos), "new": None}
            if demos:
                new = Candidate(f"r{r}.{len(rewrites) + 1}", demos, parent=cand.id, reason=job.reason,
                                origin="rewrite", fields=self.fields)
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
        candidates = self._score(list(beam) + new_cands, r, record)
        ranked = sorted(candidates, key=lambda c: -(c.score if c.score is not None else -1.0))
        record["candidates"] = [c.to_dict() for c in candidates]
        record["beam"] = [c.to_dict() for c in ranked[: self.beam_size]]
        return record, ranked[: self.beam_size]

    def _score(self, candidates: list[Candidate], r: int, record: dict) -> list[Candidate]:
        """The candidates with their scores on this round's sample of the scoring pool: the LbT score of each set
        (``score_metric="metric"``), or its accuracy or F1 per scorer, averaged over the scorers who answered."""
        pool = self._score_pool
        n = self.score_sample_size or max(1, self.eval_budget // max(1, len(candidates)))
        idx = random.Random(f"{self.seed}/{r}/score").sample(range(len(pool)), min(n, len(pool)))
        scored = []
        for c, res in zip(candidates, self._examine(self._scoring, candidates, idx, f"{r}/score", "score")):
            answered = [got for got in res.records.values() if got]
            if self.score_metric == "metric":
                score = res.score
            else:
                parts = [self._set_score([pool[i] for i in got], [got[i]["answer"] for i in got]) for got in answered]
                score = sum(parts) / len(parts) if parts else None
            scored.append(replace(c, score=score, n_scored=sum(len(got) for got in answered)))
        record["score_sample"] = idx
        return scored

    def _set_score(self, examples: list, answers: list) -> float:
        """A set's score on one scorer's answers by `score_metric` accuracy (exact match) or f1 (binary F1 of Yes
        for Yes/No tasks, macro F1 over the labels otherwise)."""
        out = self.fields.output
        ys = [self.fields.label_of(e[out]) for e in examples]
        ps = [self.fields.label_of(self._scorer.extract(a)) for a in answers]
        if self.score_metric == "accuracy":
            return accuracy(ys, ps)
        return binary_f1(ys, ps) if self.fields.yes_no else macro_f1(ys, ps, self.fields.labels)

    # --- LM calls ----------------------------------------------------------------------------------
    def _examine(self, lbt: LbTScore, candidates: list[Candidate], slots: list, step: str, role: str) -> list:
        """`lbt` (an exam) of every candidate's set on `slots`, side by side, recorded as ``<step>/<candidate>``;
        its calls counted as `role`. Raises `LbtEnvironmentError` when every call failed."""
        def one(cand):
            with requests() as made, record_scope(pair=f"{step}/{cand.id}"):
                res = lbt(demos=cand.demos, slots=slots)
            got = [rec for by_slot in res.records.values() for rec in by_slot.values()]
            asked = len(lbt.students) * len(slots)
            for rec in got:
                self._calls.add(role, pred=rec)
            self._calls.add(role, asked - len(got), failed=asked - len(got), cached=len(got) - made[0])
            return res

        results = branches(one, candidates)
        if slots and not any(by_slot for res in results for by_slot in res.records.values()):
            raise LbtEnvironmentError(f"M3: every {role} call of round {step.split('/')[0]} failed after retries; "
                                      "rerun the same command to retry")
        return results

    def _normalize(self, examples: list, what: str) -> list:
        out = []
        for n, ex in enumerate(examples):
            try:
                out.append(self.fields.example(ex))
            except (KeyError, TypeError):
                names = ", ".join(repr(f) for f in (*self.fields.inputs, self.fields.output))
                raise ValueError(f"{what}[{n}]: needs {names}") from None
        if not out:
            raise ValueError(f"{what} is empty")
        return out

    def _teach(self, role: str, pair: str, signature, rollout_id: int = 0, **inputs) -> str | None:
        """The teacher's answer (the text of `signature`'s output) to one prompt, recorded as ``teach`` `pair`;
        None when the call failed (no reason, no set: the round goes on)."""
        config = {"rollout_id": rollout_id}
        if signature is ReflectOnFailures and self.reason_max_new_tokens is not None:
            config["max_tokens"] = self.reason_max_new_tokens
        out = next(iter(signature.output_fields))

        def make():
            # an answer the adapter cannot parse is the teacher's answer (no examples in it), not a failed call
            with dspy.context(lm=self._teacher, adapter=self.teacher_adapter):
                pred = predict_or_unparsed(dspy.Predict(signature), signature, **inputs, config=config)
            return {"answer": pred[out], **{k: pred[k] for k in OUTPUT_FLAGS if pred.get(k) is not None}}

        try:
            with requests() as made:
                rec = recorded("teach", {"pair": pair}, make)
        except Exception as exc:
            if backend_down(exc) is not None:
                raise
            self._calls.add(role, failed=True)
            log.debug("M3 teacher call failed: %s: %s", type(exc).__name__, str(exc)[:300])
            return None
        self._calls.add(role, cached=not made[0], pred=rec)
        return rec["answer"]
