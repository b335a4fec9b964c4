"""The execution layer's own threads (`lbt_dspy.runner`): the call pool's bound and order, failures after every
call finished, cancelling on close, threads that end when idle (no pool or branch leaks a thread), nested
branches that never wait for a thread, and the DSPy settings of a run."""

import gc
import threading
import time
import weakref
from concurrent.futures import CancelledError

import dspy
import pytest

from lbt_dspy.errors import BackendDown
from lbt_dspy.runner import CallPool, _Threads, branches, parallel, run_settings, using_pool


def test_the_pool_bounds_calls_in_flight_and_starts_them_in_order():
    pool = CallPool(3)
    lock, started, running, peak = threading.Lock(), [], [0], [0]

    def call(i):
        with lock:
            started.append(i)
            running[0] += 1
            peak[0] = max(peak[0], running[0])
        time.sleep(0.01)
        with lock:
            running[0] -= 1
        return i * i

    assert pool.run_all([lambda i=i: call(i) for i in range(20)]) == [i * i for i in range(20)]
    assert peak[0] == 3
    assert sorted(started) == list(range(20))
    assert all(abs(pos - i) < 3 for pos, i in enumerate(started))  # in submission order, 3 at a time


def test_a_failure_is_raised_after_every_call_finished_and_a_backend_down_first():
    pool = CallPool(2)
    done = []

    def ok(i):
        time.sleep(0.02)
        done.append(i)

    def bad():
        raise ValueError("bad answer")

    def dead():
        raise BackendDown("http://x/v1", 5, "connection refused")

    with pytest.raises(ValueError):
        pool.run_all([bad] + [lambda i=i: ok(i) for i in range(4)])
    assert sorted(done) == [0, 1, 2, 3]  # all ran before the error came out
    with pytest.raises(BackendDown):
        pool.run_all([bad, dead])
    assert pool.down is not None  # calls queued from now on are not started
    with pytest.raises(Exception, match="backend down"):
        pool.run_all([lambda: 1])


def test_close_cancels_the_calls_not_started():
    pool = CallPool(1)
    gate = threading.Event()
    first = pool.submit(gate.wait)
    queued = [pool.submit(lambda: 1) for _ in range(3)]
    pool.close()
    gate.set()
    assert first.result(timeout=5) is True
    assert all(f.cancelled() for f in queued)
    assert pool.run_all([lambda: 2]) == [2]  # a closed pool starts new threads for later calls


def test_idle_threads_end_and_an_unused_pool_is_collected():
    threads = _Threads(limit=4, idle_seconds=0.05, name="lbt-test")
    done = threading.Semaphore(0)
    for _ in range(8):
        threads.start(lambda: (time.sleep(0.01), done.release()))
    for _ in range(8):
        assert done.acquire(timeout=5)
    deadline = time.monotonic() + 5
    while any(t.name == "lbt-test" for t in threading.enumerate()) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not any(t.name == "lbt-test" for t in threading.enumerate())

    pool = CallPool(4)
    pool.run_all([lambda: 1] * 8)
    ref = weakref.ref(pool)
    del pool
    gc.collect()
    assert ref() is None  # its threads hold no reference to it: they end when idle


def test_nested_branches_with_a_limit_never_wait_for_a_thread_and_reuse_them():
    pool = CallPool(2)
    seen = set()

    def inner(x):
        seen.add(threading.get_ident())
        return parallel([lambda: x * 10, lambda: x * 100])

    def outer(x):
        return branches(inner, [x, x + 1, x + 2])

    with using_pool(pool):
        for _ in range(5):
            got = branches(outer, range(6), limit=2)
            assert got == [[[x * 10, x * 100], [(x + 1) * 10, (x + 1) * 100], [(x + 2) * 10, (x + 2) * 100]]
                           for x in range(6)]
    assert threading.get_ident() in seen  # the last branch ran in the caller's thread
    assert len(seen) < 5 * 6 * 3  # threads were reused across rounds


def test_a_failed_branch_is_raised_after_the_others_finished():
    done = []

    def step(x):
        if x == 0:
            raise RuntimeError("boom")
        time.sleep(0.02)
        done.append(x)
        return x

    with pytest.raises(RuntimeError, match="boom"):
        branches(step, range(4))
    assert sorted(done) == [1, 2, 3]


def test_a_run_keeps_no_dspy_trace_or_module_history_and_its_pool_inherits_that():
    pool = CallPool(2)
    with run_settings(), using_pool(pool):
        seen = parallel([lambda: (dspy.settings.max_trace_size, dspy.settings.max_history_size)] * 2)
    assert seen == [(0, 0), (0, 0)]
    assert dspy.settings.max_trace_size > 0  # outside a run DSPy's defaults stand


def test_the_sandbox_modules_earlier_name_still_imports_and_warns():
    import warnings

    import lbt_dspy.sandbox
    import lbt_dspy.sandbox.process
    import lbt_dspy.sandbox.run  # noqa: F401  (the earlier name: a command's run is `run.py` elsewhere)

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert lbt_dspy.sandbox.run is lbt_dspy.sandbox.process
    assert [w.category for w in seen] == [DeprecationWarning]
    assert str(seen[0].message).startswith("run is now lbt_dspy.sandbox.process")
