"""Concurrent LM jobs that land in a `RunStore` as they finish, skipping what is already there."""

from __future__ import annotations

import logging
from collections import deque
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from typing import Any, Callable

from tqdm.auto import tqdm

from .store import RunStore

log = logging.getLogger("lbt_dspy")


@dataclass
class Job:
    """One LM call: `call()` returns a prediction; `finish(prediction)` turns it into the stored record."""

    key: str
    call: Callable[[], Any]
    finish: Callable[[Any], dict]


@dataclass
class StageReport:
    done_before: int = 0
    ran: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


def run_jobs(store: RunStore, stage: str, jobs: list[Job], concurrency: int = 16, desc: str | None = None,
             progress: bool = True, on_done: Callable[[Job, dict | None], list[Job] | None] | None = None,
             done: dict | None = None) -> StageReport:
    """Run the jobs whose key is not yet in `stage`, `concurrency` at a time, with a progress bar.

    A call that fails (after the LM's own retries) is counted and logged, never recorded: a rerun
    retries it. Records are scored and written in this thread, in completion order.

    Args:
        on_done: For stages that decide as they go (adaptive exams): called in this thread after each
            job with its record (None when the call failed); the jobs it returns run next, ahead of
            the queue.
        done: The stage's records as the caller already loaded them (kept up to date here); None: load them.
    """
    done = store.load(stage) if done is None else done
    todo = deque(j for j in jobs if j.key not in done)
    report = StageReport(done_before=len(jobs) - len(todo))
    if not todo:
        return report
    bar = tqdm(total=None if on_done else len(jobs), initial=report.done_before, desc=desc or stage,
               disable=not progress, dynamic_ncols=True, unit="call")
    # At most `concurrency` calls are out at once, counted until their record is written: a kill loses at
    # most that many finished generations, and a slow record-writer slows the callers instead of piling up.
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        running = {}

        def refill():
            while todo and len(running) < concurrency:
                job = todo.popleft()
                running[pool.submit(job.call)] = job

        refill()
        try:
            while running:
                finished, _ = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    job = running.pop(fut)
                    record = None
                    try:
                        record = {"key": job.key, **job.finish(fut.result())}
                    except Exception as exc:  # a failed call is not a result
                        report.failed += 1
                        msg = f"{job.key}: {type(exc).__name__}: {exc}"
                        if len(report.errors) < 5:
                            report.errors.append(msg[:500])
                        log.debug("call failed: %s", msg[:300])
                    else:
                        store.append(stage, record)
                        done[job.key] = record
                        report.ran += 1
                    bar.update(1)
                    if on_done:
                        todo.extendleft(reversed([j for j in on_done(job, record) or [] if j.key not in done]))
                refill()
        except BaseException:
            for f in running:
                f.cancel()
            raise
        finally:
            bar.close()
    return report
