"""The execution layer: how the DSPy modules' LM calls run, for every entry point.

The modules (`Teacher`, `Student`, `LbTScore`, `M1`) say only what is independent; this layer decides how:

- `parallel(calls)`: independent LM calls (a teacher's samples, a pair's exam problems), submitted back to
  back to the *current* `CallPool` and gathered. The pool is the run's (``lbt m1``, ``lbt exam``, ``lbt m2``,
  ``lbt m3``: ``concurrency``), else the outermost module's (``M1(num_threads=N)``), else the caller's own.
  At most ``num_threads`` calls are in flight, started in submission order: a pair's exam problems reach a
  server together, so its prefix cache sees their shared demo together.
- `branches(fn, items)`: compound steps that each make calls (one pair's exam inside `M1`, one problem of
  a run), each in a thread of its own (reused, never bounded) that waits on its calls without holding a
  slot of the pool; the last in the caller's thread.
- `recorded` / `record_scope`: the run directory as a layer. Inside a `record_scope(recorder, tp=...)`,
  every generation is looked up by its key (``tp/pair/student/slot``) first: a finished one is replayed
  from the record, a new one is made, written as soon as it finishes, and returned. Outside a scope,
  modules just call their LMs. A record is a graded generation (parsed answer, score), so it is made
  where the grade is known, not at the LM boundary: docs/development.md says why.
- `run_jobs`: plain jobs keyed in a `RunStore` (``lbt exam``, ``lbt m2 eval``), in the same `CallPool`.
- `run_settings`: the DSPy settings of a run's calls (no trace, no per-module history).

The threads are daemon threads that end when idle: a call or a branch never keeps the process alive.
"""

from __future__ import annotations

import contextvars
import itertools
import logging
import queue
import threading
import weakref
from collections import deque
from concurrent.futures import FIRST_COMPLETED, CancelledError, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Iterable

import dspy
from tqdm.auto import tqdm

from .counting import CallCounter
from .errors import backend_down
from .store import RunStore

log = logging.getLogger("lbt_dspy")


# --- the bounded pool ------------------------------------------------------------------------------
class Stopped(Exception):
    """A queued call that was not started because its pool stopped (its backend is down)."""


class _Threads:
    """Daemon threads that run tasks in the order given: an idle thread takes the next task, else a new one
    starts, up to `limit` (None: no limit, so a task never waits for a thread); a thread idle for
    `idle_seconds` ends. Its threads hold no reference to its user (an unused `CallPool` is collected).

    Args:
        limit: Threads at most.
        idle_seconds: How long an idle thread waits for a task before it ends.
        name: The threads' name.
    """

    def __init__(self, limit: int | None = None, idle_seconds: float = 60.0, name: str = "lbt"):
        self.limit, self.idle_seconds, self.name = limit, idle_seconds, name
        self._tasks: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0  # alive
        self._idle = 0  # free, and no queued task counted for them
        self._backlog = 0  # queued tasks with no thread counted for them (all `limit` threads busy)
        self._closed = False

    def start(self, task: Callable[[], None]) -> None:
        with self._lock:
            self._tasks.put(task)
            if self._idle:
                self._idle -= 1
                return
            if self.limit is not None and self._threads >= self.limit:
                self._backlog += 1  # the next thread to finish a task takes it
                return
            self._threads += 1
        threading.Thread(target=self._work, name=self.name, daemon=True).start()

    def close(self) -> list:
        """Stop: the tasks not started are returned (to cancel); running ones finish, then their threads end."""
        with self._lock:
            self._closed = True
            waiting = []
            while True:
                try:
                    waiting.append(self._tasks.get_nowait())
                except queue.Empty:
                    break
            for _ in range(self._threads):
                self._tasks.put(None)
        return waiting

    def _work(self) -> None:
        while True:
            try:
                task = self._tasks.get(timeout=self.idle_seconds)
            except queue.Empty:
                with self._lock:
                    if self._closed or (self._idle and self._tasks.empty()):
                        self._idle -= not self._closed
                        self._threads -= 1
                        return
                continue
            if task is None:  # closed
                return
            try:
                task()
            finally:
                with self._lock:
                    if self._backlog:
                        self._backlog -= 1
                    else:
                        self._idle += 1


class CallPool:
    """A bounded pool for LM calls: at most `num_threads` in flight, started in submission order.

    Each call runs in a copy of the submitter's context (DSPy settings, the record scope). Once a call
    meets `BackendDown` (an endpoint's open circuit breaker), the calls still queued are not started.
    Its threads are daemon threads, started as calls need them and ended after a minute without one.

    Args:
        num_threads: Calls in flight at most.

    Example:
        >>> pool = CallPool(4)
        >>> pool.run_all([lambda: 1, lambda: 2])
        [1, 2]
        >>> pool.submit(lambda: 3).result()
        3
    """

    def __init__(self, num_threads: int = 16):
        if not isinstance(num_threads, int) or num_threads < 1:
            raise ValueError(f"num_threads must be an integer >= 1, got {num_threads!r}")
        self.num_threads = num_threads
        self._state = _PoolState()
        self._lock = threading.Lock()  # one submitter at a time
        self._threads = _Threads(num_threads, name="lbt-call")

    @property
    def down(self) -> BaseException | None:
        """The `BackendDown` a call met, if one did (calls queued after it are not started)."""
        return self._state.down

    def __deepcopy__(self, memo):  # copies of a program (DSPy's optimizers, Module.load) share its pool
        return self

    def __getstate__(self):
        return {"num_threads": self.num_threads}

    def __setstate__(self, state):
        self.__init__(state["num_threads"])

    def __enter__(self) -> "CallPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Cancel the calls not started and let the threads go once their calls are done (a pool of a run,
        not of a module). A later call starts new threads."""
        with self._lock:
            old, self._threads = self._threads, _Threads(self.num_threads, name="lbt-call")
        for call in old.close():
            if call is not None:
                call.cancel()

    def submit(self, fn: Callable[[], Any]) -> Future:
        """``fn()`` in the pool, as a `Future`."""
        future: Future = Future()
        with self._lock:
            self._threads.start(_Call(fn, self._state, future))
        return future

    def submit_all(self, fns: Iterable[Callable[[], Any]]) -> list[Future]:
        """Submit calls back to back (no other submitter interleaves), e.g. one pair's exam problems."""
        fns = list(fns)
        futures = [Future() for _ in fns]
        with self._lock:
            for fn, future in zip(fns, futures):
                self._threads.start(_Call(fn, self._state, future))
        return futures

    def run_all(self, fns: Iterable[Callable[[], Any]]) -> list:
        """The results of calls submitted back to back (no other submitter interleaves), in order, once all
        are done; then the first failure, if any, is raised (a backend that went down first), so every
        call that could finish did, and was recorded, before an error propagates."""
        fns = list(fns)
        if not fns:
            return []
        batch = _Batch(len(fns))
        with self._lock:
            for i, fn in enumerate(fns):
                self._threads.start(_Call(fn, self._state, batch, i))
        batch.done.wait()
        if batch.failed:
            errors = [e for e in batch.errors if e is not None]
            raise next((backend_down(e) for e in errors if backend_down(e) is not None), None) or errors[0]
        return batch.results


class _PoolState:
    """What a pool's calls share with it: the backend failure that stopped it (outlives `CallPool.close`)."""

    __slots__ = ("down",)

    def __init__(self):
        self.down: BaseException | None = None


class _Batch:
    """The results of `CallPool.run_all`: filled as its calls finish; `done` once all did."""

    __slots__ = ("results", "errors", "failed", "last", "finished", "done")

    def __init__(self, n: int):
        self.results: list = [None] * n
        self.errors: list = [None] * n
        self.failed = False
        self.last = n - 1
        self.finished = itertools.count()  # next() is atomic: each call takes its own number, no lock
        self.done = threading.Event()

    def finish(self, i: int, value, error: BaseException | None) -> None:
        self.results[i] = value
        if error is not None:
            self.errors[i] = error
            self.failed = True
        if next(self.finished) == self.last:
            self.done.set()


class _Call:
    """One call of a `CallPool`: ``fn`` in a copy of the submitter's context, its result delivered to a
    `Future` or to slot `index` of a `_Batch`."""

    __slots__ = ("fn", "ctx", "state", "to", "index")

    def __init__(self, fn: Callable[[], Any], state: _PoolState, to, index: int | None = None):
        self.fn, self.ctx, self.state, self.to, self.index = fn, contextvars.copy_context(), state, to, index

    def __call__(self) -> None:
        if self.index is None and not self.to.set_running_or_notify_cancel():
            return  # a cancelled future
        value = error = None
        if self.state.down is not None:
            error = Stopped(str(self.state.down))
        else:
            try:
                value = self.ctx.run(_as_worker, self.fn)
            except BaseException as exc:
                error = exc
                down = backend_down(exc)
                if down is not None and self.state.down is None:
                    self.state.down = down
        if self.index is not None:
            self.to.finish(self.index, value, error)
        elif error is not None:
            self.to.set_exception(error)
        else:
            self.to.set_result(value)

    def cancel(self) -> None:
        if self.index is None:
            self.to.cancel()
        else:
            self.to.finish(self.index, None, CancelledError())


_IN_WORKER: contextvars.ContextVar[bool] = contextvars.ContextVar("lbt_in_worker", default=False)


def _as_worker(fn):
    _IN_WORKER.set(True)  # in the copied context of this call only
    return fn()


_POOL: contextvars.ContextVar[CallPool | None] = contextvars.ContextVar("lbt_call_pool", default=None)


@contextmanager
def using_pool(pool: CallPool):
    """Modules called inside run their calls in `pool` (how `M1(num_threads=N)` bounds its parts)."""
    token = _POOL.set(pool)
    try:
        yield pool
    finally:
        _POOL.reset(token)


@contextmanager
def run_settings():
    """DSPy settings for the calls of a run (``lbt m1``, ``lbt exam``, ``lbt m2 eval``), inherited by its pool's
    threads: no trace of `Predict` calls (what DSPy's optimizers collect while compiling; a run compiles
    nothing) and no per-module or per-LM history (a run's modules are its own; `dspy.inspect_history()` still
    shows the last calls). DSPy keeps each of these lists up to 10,000 entries, and past that drops the oldest
    with a ``pop(0)`` of the whole list on every call; their entries (prompts, responses, demos) also stay
    alive for the garbage collector to scan again and again.

    Example:
        >>> with run_settings():
        ...     dspy.settings.max_trace_size, dspy.settings.max_history_size
        (0, 0)
    """
    with dspy.context(max_trace_size=0, max_history_size=0):
        yield


_OWN_POOLS: "weakref.WeakKeyDictionary[object, CallPool]" = weakref.WeakKeyDictionary()
_OWN_LOCK = threading.Lock()


def own_pool(owner: object, num_threads: int) -> CallPool:
    """The pool a module uses when it is the outermost caller: one per module object, so concurrent calls
    of one module (e.g. under `dspy.Evaluate`) share its bound."""
    with _OWN_LOCK:
        pool = _OWN_POOLS.get(owner)
        if pool is None or pool.num_threads != num_threads:
            pool = _OWN_POOLS[owner] = CallPool(num_threads)
        return pool


@contextmanager
def bounded(owner: object, num_threads: int):
    """Calls made inside run in the enclosing pool, or — when there is none — in `owner`'s own pool of
    `num_threads` (how ``M1(num_threads=N)`` bounds everything its parts call)."""
    with using_pool(_POOL.get() or own_pool(owner, num_threads)) as pool:
        yield pool


def parallel(calls: Iterable[Callable[[], Any]], *, owner: object = None, num_threads: int = 16) -> list:
    """Independent LM calls, submitted back to back (no other submitter interleaves) to the current pool —
    or `owner`'s own when there is none — and their results in order (`gather`)."""
    if _IN_WORKER.get():  # already one of the pool's calls: waiting on the pool from inside could starve it
        return [call() for call in calls]
    pool = _POOL.get() or own_pool(owner if owner is not None else parallel, num_threads)
    return pool.run_all(calls)


def map_calls(fn: Callable[[Any], Any], items: Iterable, *, owner: object = None, num_threads: int = 16,
              desc: str = "", progress: bool = False) -> list:
    """``[fn(item) for item in items]`` as independent calls (`parallel`), with a tqdm bar when `progress`."""
    items = list(items)
    if not items:
        return []
    bar = tqdm(total=len(items), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    lock = threading.Lock()

    def call(item):
        try:
            return fn(item)
        finally:
            with lock:
                bar.update(1)
    try:
        return parallel([lambda item=item: call(item) for item in items], owner=owner, num_threads=num_threads)
    finally:
        bar.close()


def branches(fn: Callable[[Any], Any], items: Iterable, *, scope: Callable[[Any], dict] | None = None,
             limit: int | None = None) -> list:
    """``[fn(item) for item in items]``, each item in a thread of its own (the caller's context copied;
    ``record_scope(**scope(item))`` around it when given); the last item in the caller's thread. For steps
    that make several calls and wait on them: a branch waits without holding a slot of the pool, so nested
    steps never starve it. At most `limit` branches run at once. Every branch finishes before the first
    failure (a backend that went down first) is raised, so what could be recorded was."""
    items = list(items)
    results: list = [None] * len(items)
    errors: list = [None] * len(items)
    gate = threading.BoundedSemaphore(limit) if limit else None
    finished = threading.Semaphore(0)

    def run(i, item):
        try:
            if scope is None:
                results[i] = fn(item)
            else:
                with record_scope(**scope(item)):
                    results[i] = fn(item)
        except BaseException as exc:  # raised in the caller's thread below
            errors[i] = exc
        finally:
            if gate:
                gate.release()
            finished.release()

    for i, item in enumerate(items):
        if gate:
            gate.acquire()
        if i == len(items) - 1:  # the caller would only wait: it takes the last branch itself
            contextvars.copy_context().run(run, i, item)
        else:
            _BRANCH_THREADS.start(partial(contextvars.copy_context().run, run, i, item))
    for _ in items:
        finished.acquire()
    failed = [e for e in errors if e is not None]
    if failed:
        raise next((backend_down(e) for e in failed if backend_down(e) is not None), None) or failed[0]
    return results


_BRANCH_THREADS = _Threads(name="lbt-branch")  # no limit: a branch never waits for a thread


def gather(futures: list[Future]) -> list:
    """The futures' results in order, once all are done; then the first failure, if any, is raised
    (so every call that could finish did, and was recorded, before an error propagates)."""
    wait(futures)
    for f in futures:
        exc = f.exception()
        if exc is not None:
            down = next((backend_down(g.exception()) for g in futures if g.exception() is not None
                         and backend_down(g.exception()) is not None), None)
            raise down or exc
    return [f.result() for f in futures]


# --- recording -------------------------------------------------------------------------------------
# The record files' keys: the fields, in order, that name one generation.
KEY_FIELDS = {"greedy": ("tp",), "teach": ("tp", "pair"), "exam": ("tp", "pair", "student", "slot")}
# Records name a pair ``pair``; runs made before the rename call it ``sample``, which readers still read
# (`lbt_dspy.m1.results.pair_index`).


class Recorder:
    """The generations of a run directory: replayed when recorded, else made and recorded.

    Args:
        store: The run directory.
        annotate: ``annotate(stage, record) -> dict`` of extra fields for a new record (the run scores
            teacher answers against the references; modules never see the references).
        on_new: Called with the stage after each new record (progress bars).
    """

    def __init__(self, store: RunStore, annotate: Callable[[str, dict], dict] | None = None,
                 on_new: Callable[[str], None] | None = None):
        self.store = store
        self.annotate = annotate
        self.on_new = on_new
        self.records = {stage: store.load(stage) for stage in KEY_FIELDS}
        self.calls = CallCounter()  # LM calls this run made (a replayed record is none), by stage
        self._failures: set[int] = set()

    def is_call_failure(self, exc: BaseException) -> bool:
        """Whether `exc` is a failed generation this recorder counted (not a bug or bad input)."""
        return id(exc) in self._failures

    def generate(self, stage: str, fields: dict, make: Callable[[], dict]) -> dict:
        names = KEY_FIELDS[stage]
        try:
            values = [fields[n] for n in names]
        except KeyError:
            missing = [n for n in names if n not in fields]
            raise RuntimeError(f"a {stage} generation outside its scope: no {', '.join(missing)}") from None
        key = "/".join(map(str, values))
        rec = self.records[stage].get(key)
        if rec is not None:
            return rec
        try:
            rec = {"key": key, **dict(zip(names, values)), **make()}
            if self.annotate:
                rec.update(self.annotate(stage, rec))
        except Exception as exc:  # a failed call is not a result: counted, never recorded
            self._failures.add(id(exc))  # (a set's add and a dict's item assignment are atomic: no lock)
            self.calls.add(stage, failed=True, error=f"{key}: {type(exc).__name__}: {exc}")
            log.debug("call failed: %s: %s", key, exc)
            raise
        self.store.append(stage, rec)  # written as soon as it is made
        self.records[stage][key] = rec
        self.calls.add(stage, pred=rec)
        if self.on_new:
            self.on_new(stage)
        return rec


@dataclass(frozen=True)
class _Scope:
    recorder: Recorder
    fields: dict


_SCOPE: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("lbt_record_scope", default=None)


@contextmanager
def record_scope(recorder: Recorder | None = None, **fields):
    """Generations made inside are recorded by `recorder` (or the enclosing scope's), keyed by `fields`
    (``tp``, then ``pair``, ...) and the module's own (``student``, ``slot``). ``stage="greedy"`` records a
    teacher's generations as the greedy baseline instead of as TR-TA pairs."""
    outer = _SCOPE.get()
    if recorder is None and outer is None:
        yield
        return
    scope = _Scope(recorder or outer.recorder, {**(outer.fields if outer else {}), **fields})
    token = _SCOPE.set(scope)
    try:
        yield
    finally:
        _SCOPE.reset(token)


def recorded(stage: str, fields: dict, make: Callable[[], dict]) -> dict:
    """One generation: ``make()`` gives its record fields (``rationale``, ``answer``...). In a record
    scope it is replayed if recorded, else made and recorded; outside one it is just made."""
    scope = _SCOPE.get()
    if scope is None:
        return make()
    fields = {**scope.fields, **fields}
    if stage == "teach":
        stage = fields.pop("stage", stage)
    return scope.recorder.generate(stage, fields, make)


# --- plain jobs --------------------------------------------------------------------------------------
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
    own = _POOL.get() is None
    pool = _POOL.get() or CallPool(concurrency)  # the run's pool, else one of its own
    try:
        running = {}

        def refill():
            with run_settings():  # the calls run with the run's DSPy settings (their context is copied)
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
    finally:
        if own:
            pool.close()
    return report
