"""The resumable `lbt m1` run: the `M1` module over a dataset, through a run directory.

The run executes the same modules a user composes (`components.build_m1`: `Teacher`, `Student`,
`LbTScore`, `M1`), inside a `record_scope`: every generation is looked up in the run directory first
(``greedy.jsonl``, ``teach.jsonl``, ``exam.jsonl``, keyed ``tp/pair/student/slot``), replayed if it
finished before, else made and appended as soon as it finishes. A killed run resumes and never asks
again for a finished generation; the picks are the module's, recomputed from the records by
`results.summarize`. The greedy baseline (the teacher at temperature 0) is queued first, beside M1.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import nullcontext
from pathlib import Path

from tqdm.auto import tqdm

from ..components import build_components, build_m1, build_teacher
from ..config import M1Config
from ..errors import LbtError, backend_down
from ..models import ModelPool
from ..models.vllm_server import PrefixCacheWatch
from ..runner import CallPool, Recorder, Stopped, branches, gather, record_scope, run_settings, using_pool
from ..store import RunStore
from .results import RECORD_FIELDS, tp_key  # tp_key lives in results (readers need it without the run)

log = logging.getLogger("lbt_dspy")

# Far above the paper's 256; a larger request is a typo or a wish no run directory can hold.
MAX_PAIRS = 65536


def run_m1(cfg: M1Config, output_path: str | Path, progress: bool = True, log_dir: str | None = None,
           pool: ModelPool | None = None) -> dict:
    """Run (or resume) M1 into `output_path`; returns the counts of LM calls made and failed, the seconds they
    took once the servers were up (``seconds``) and the engine's prefix-cache hit rate, per replica and in total
    (``prefix_cache``: `PrefixCacheWatch.result`; None without vLLM servers lbt started).
    `pool`: a `ModelPool` whose servers are already started (benchmarks); None: one of its own, closed at the end.

    Records: ``greedy`` (teacher, temperature 0), ``teach`` (`num_pairs` TR-TA pairs per TP), ``exam``
    (every pair x student x exam problem, or the adaptive scheduler's choice).
    """
    if cfg.num_pairs > MAX_PAIRS:
        raise LbtError(f"num_pairs: {cfg.num_pairs} TR-TA pairs per problem is more than lbt runs (at most "
                       f"{MAX_PAIRS}; the paper uses 256)")
    parts = build_components(cfg)
    tps = parts.data.teaching
    keys = [tp_key(tp, n) for n, tp in enumerate(tps)]
    if len(set(keys)) != len(keys):
        raise LbtError("dataset: teaching problems need distinct unique_id values")
    # resume checks the records it reads (a bad line: file:line, exit 2)
    store = RunStore(output_path, cfg.to_dict(), required=RECORD_FIELDS)
    refs = {k: parts.scorer.reference(tp) for k, tp in zip(keys, tps)}
    scorer = parts.scorer

    def annotate(stage, rec):  # teacher answers: correctness (code: V-score) and extra grades (S-score)
        if stage == "exam":
            return {}
        ref = refs[rec["tp"]]
        return {"score": scorer.score(rec["answer"], ref), **scorer.judge(rec["answer"], ref)}

    own = pool is None
    pool = pool or ModelPool(cache=cfg.cache, num_retries=cfg.num_retries, log_dir=log_dir)
    with (pool if own else nullcontext(pool)):
        m1 = build_m1(cfg, pool, parts)
        greedy = build_teacher(cfg, pool, parts.adapter, greedy=True)
        t_calls = time.monotonic()  # the servers are up: from here on, LM calls
        n_students = len(m1.lbt_score.students)
        adaptive = cfg.exam_budget == "adaptive"
        bar_lock = threading.Lock()
        recorder = Recorder(store, annotate)
        done_before = sum(len(r) for r in recorder.records.values())
        total = None
        if not adaptive:
            exam_len = sum(len(m1.lbt_score.exam(tp)) for tp in tps)
            total = len(tps) * (1 + cfg.num_pairs) + cfg.num_pairs * exam_len * n_students
        bar = tqdm(total=total, initial=done_before, desc="lbt m1", disable=not progress, dynamic_ncols=True,
                   unit="call")

        def tick(stage):
            with bar_lock:
                bar.update(1)
        recorder.on_new = tick
        # each vLLM replica's prefix-cache counters, read now and every few seconds (one may die mid-run)
        watch = PrefixCacheWatch(pool.prefix_cache).open()
        budgets, failed_tps = {}, set()
        run_pool = CallPool(cfg.concurrency)  # every LM call of the run, `concurrency` at a time
        try:
            with using_pool(run_pool), run_settings():
                # The greedy baseline and M1 on every problem, side by side in one pool: the greedy answers are queued
                # first and waited for last, so the servers do not idle between the two (tail of one, start of other).
                def greedy_answer(k, tp):
                    with record_scope(recorder, tp=k, stage="greedy"):
                        return greedy.sample(tp["question"], 0)
                def failed_call(exc: Exception) -> bool:  # counted by the recorder; a rerun retries it
                    return recorder.is_call_failure(exc) or backend_down(exc) is not None or isinstance(exc, Stopped)

                greedy_calls = run_pool.submit_all([lambda k=k, tp=tp: greedy_answer(k, tp) for k, tp in zip(keys, tps)])

                def solve(item):
                    k, tp = item
                    if run_pool.down is not None:
                        return
                    try:
                        with record_scope(recorder, tp=k):
                            budgets[k] = m1(item=tp).exam_budget
                    except Exception as exc:
                        failed_tps.add(k)
                        if not failed_call(exc):
                            raise  # not a failed LM call (those are counted; a rerun resumes the problem)

                branches(solve, list(zip(keys, tps)), limit=max(1, min(len(tps), cfg.concurrency)))
                try:
                    gather(greedy_calls)
                except Exception as exc:
                    if not failed_call(exc):
                        raise  # failed calls are counted (a rerun retries them)
        finally:
            bar.close()
            run_pool.close()
            watch.close()
        if run_pool.down is not None:
            store.close()
            raise run_pool.down
        prefix_cache = watch.result()
        seconds = time.monotonic() - t_calls
    counted = recorder.calls
    calls = {stage: counted.of(stage) for stage in ("greedy", "teach", "exam")}
    calls["prefix_cache"] = prefix_cache
    calls["seconds"] = round(seconds, 2)
    if prefix_cache is not None:  # the engine's view of this invocation, beside the records
        store.write_json("engine.json", {"prefix_cache": prefix_cache})
    calls["failed"] = counted.failed
    calls["error"] = None
    for stage in ("greedy", "teach", "exam"):
        if counted.failed_of(stage):
            log.error("%s: %d call(s) failed after %d attempt(s) each", stage, counted.failed_of(stage),
                      cfg.num_retries + 1)
    if counted.errors:
        calls["error"] = f"after {cfg.num_retries + 1} attempt(s) each, e.g. {counted.errors[0]}"
    if adaptive:
        _write_budget(cfg, store, recorder, keys, tps, m1, budgets, failed_tps)
    store.close()
    return calls


def _write_budget(cfg, store, recorder, keys, tps, m1, budgets, failed_tps) -> None:
    """``exam_budget.json``: the adaptive exams' generations against the full exam's, from the records."""
    pairs_of = {}
    for rec in recorder.records["teach"].values():
        pairs_of[rec["tp"]] = pairs_of.get(rec["tp"], 0) + 1
    n_students = len(m1.lbt_score.students)
    full = sum(pairs_of.get(k, 0) * len(m1.lbt_score.exam(tp)) for k, tp in zip(keys, tps)) * n_students
    used = len(recorder.records["exam"])
    store.write_json("exam_budget.json", {
        "exam_budget": "adaptive", "exam_budget_cfg": cfg.exam_budget_cfg, "complete": not failed_tps,
        "max_rounds_this_run": max((b["rounds"] for b in budgets.values()), default=0),
        "student_generations": used, "full_exam_generations": full,
        "fraction": round(used / full, 4) if full else 0.0})
    log.info("adaptive exams: %d of %d student generations (%.1f%%)", used, full, 100 * used / max(full, 1))
