"""math-verify checks off the caller's GIL: a few worker processes, each answer parsed once per process.

`answers_equivalent` (`lbt_dspy.scoring.math`) settles the cheap cases itself (equal text, two integers) and
hands the rest to `check`. A check parses both answers with math-verify (sympy, pure Python: ~2-10 ms, seconds
for a hostile answer, and unbounded for ``10^{10^{10}}`` in a thread, where math-verify's signal timeout does
not exist; such a power holds the GIL, freezing every thread of the process). So `check` sends it to one of
`workers` processes that run this file as a script: the calling thread waits on a pipe without the GIL, the
worker parses in its main thread with math-verify's 5 s timeouts, and caches what it parsed (a reference is
parsed once, not once per answer). Without workers (``LBT_CHECK_WORKERS=0``) the same check runs in the
calling process, as before.

This file imports nothing of lbt_dspy, so a worker starts in the time math-verify takes to import (~0.3 s).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from functools import lru_cache

log = logging.getLogger("lbt_dspy")

MAX_ANSWER_CHARS = 2000  # a runaway "answer" is not worth a sympy parse
TIMEOUT_S = 5  # math-verify's own timeout per parse and per comparison (signal-based: main thread only)
DEADLINE_S = 60  # a worker silent this long on one check is killed; the check scores False


@lru_cache(maxsize=4096)
def parse(ans: str, timeout: int | None) -> list:
    """math-verify's parse of the LaTeX `ans` (cut to 2,000 characters), cached: a reference met by many
    answers is parsed once per process. The list is shared: never mutate it."""
    from math_verify import parse as mv_parse

    return mv_parse(f"${ans[:MAX_ANSWER_CHARS]}$", parsing_timeout=timeout)


def check_here(reference: str, answer: str) -> bool:
    """The check in this process: math-verify's verdict on the parsed pair; False when either does not parse
    or anything goes wrong (hostile model output never raises). Timeouts only in the main thread.

    Example:
        >>> check_here("\\\\frac{1}{2}", "0.5")
        True
    """
    from math_verify import verify

    timeout = TIMEOUT_S if threading.current_thread() is threading.main_thread() else None
    try:
        gold, pred = parse(reference, timeout), parse(answer, timeout)
        return bool(gold and pred and verify(gold, pred, timeout_seconds=timeout))
    except Exception:
        return False


class CheckWorkers:
    """`workers` processes that run `check_here` for the threads of this one, started as checks need them.

    A thread takes an idle worker (or starts one, up to `workers`), writes ``[reference, answer]`` as a JSON
    line and waits for the verdict line. A worker that dies mid-check (killed, out of memory) is replaced and
    the check is retried once on a fresh one; a check that kills that one too, or that a worker keeps silent on
    for `DEADLINE_S`, scores False with a warning. Workers run in their own session (the terminal's Ctrl-C
    reaches only this process) and exit when their stdin closes: at `close`, at exit, or when this process dies.

    Args:
        workers: Processes at most.

    Example:
        >>> with CheckWorkers(2) as pool:
        ...     pool.check("\\\\frac{3}{4}", "0.75"), pool.check("\\\\frac{3}{4}", "garbage }{")
        (True, False)
    """

    def __init__(self, workers: int):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.workers = workers
        self._slots = threading.BoundedSemaphore(workers)  # one per check in flight
        self._idle: list[subprocess.Popen] = []
        self._procs: set[subprocess.Popen] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> "CheckWorkers":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def check(self, reference: str, answer: str) -> bool:
        """`check_here(reference, answer)`, in a worker."""
        line = (json.dumps([reference[:MAX_ANSWER_CHARS], answer[:MAX_ANSWER_CHARS]]) + "\n").encode()
        for attempt in (1, 2):
            with self._slots:
                try:
                    proc = self._take()
                except OSError as exc:  # no process can be started here: checks in this process, as before
                    log.warning("cannot start a math-check worker (%s): checks run in this process", exc)
                    if self is _POOL:
                        configure(0)
                    return check_here(reference, answer)
                if proc is None:  # closed (by `configure`, or at exit): as the module's `check` says now
                    return check(reference, answer)
                try:
                    proc.stdin.write(line)
                    proc.stdin.flush()
                    waiting = select.poll()  # not select(): a busy client's pipes may be past fd 1024
                    waiting.register(proc.stdout, select.POLLIN)
                    reply = proc.stdout.readline() if waiting.poll(DEADLINE_S * 1000) else None
                except (OSError, ValueError):  # the worker is gone (broken pipe) or closed
                    reply = b""
                except BaseException:  # Ctrl-C while waiting: its reply would answer the next check; retire it
                    self._retire(proc)
                    raise
                if reply:
                    with self._lock:
                        self._idle.append(proc)
                    return reply.strip() == b"true"
                self._retire(proc)
            if reply is None:
                log.warning("a math check ran past %d s in its worker (answer %.80r): killed, scored False",
                            DEADLINE_S, answer)
                return False
            log.warning("a math-check worker died (exit code %s)%s", proc.returncode,
                        "; retrying the check on a fresh one" if attempt == 1 else
                        f"; the check (answer {answer[:80]!r}) scores False")
        return False

    def _take(self) -> subprocess.Popen | None:
        """An idle worker, else a new one (the caller holds a slot, so fewer than `workers` are busy)."""
        with self._lock:
            if self._closed:
                return None
            if self._idle:
                return self._idle.pop()
            # -P: the script's folder (which has a math.py) is not put on sys.path
            proc = subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__)], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, start_new_session=True)
            self._procs.add(proc)
            return proc

    def _retire(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)
        proc.kill()
        proc.wait()

    def close(self) -> None:
        """Stop the workers: their stdin closes; those not gone within 2 s (busy on a slow check) are killed."""
        with self._lock:
            self._closed = True
            procs, self._procs, self._idle = list(self._procs), set(), []
        for proc in procs:
            try:
                proc.stdin.close()
            except OSError:
                pass
        deadline = time.monotonic() + 2
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def default_workers() -> int:
    """``LBT_CHECK_WORKERS`` when set (0: checks in the calling process), else this process's cores, at most 8."""
    env = os.environ.get("LBT_CHECK_WORKERS", "").strip()
    if env:
        if not env.isdigit():
            raise ValueError(f"LBT_CHECK_WORKERS must be a whole number (0: no workers), got {env!r}")
        return int(env)
    return max(1, min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1))


_EXITING = False
_POOL: CheckWorkers | None = None
_POOL_LOCK = threading.Lock()
_WORKERS: int | None = None  # None: default_workers() at the first check


def configure(workers: int | None) -> None:
    """Use `workers` processes for the checks from now on (0: in the calling process; None: the default).
    Stops the current ones unless they are as many.

    Example:
        >>> configure(0)  # checks in this process, as before issue 23  # doctest: +SKIP
    """
    global _WORKERS
    if workers != _WORKERS or workers is None:
        shutdown()
    _WORKERS = workers


def check(reference: str, answer: str) -> bool:
    """math-verify's verdict on `answer` against `reference`, in a worker process when workers are on.

    Example:
        >>> check("2\\\\sqrt{3}", "\\\\sqrt{12}")
        True
    """
    global _POOL, _WORKERS
    if _EXITING:  # the workers are stopped: only the main thread, whose timeouts hold, may still parse
        return threading.current_thread() is threading.main_thread() and check_here(reference, answer)
    pool = _POOL
    if pool is None:
        with _POOL_LOCK:
            if _WORKERS is None:
                _WORKERS = default_workers()
            if _POOL is None and _WORKERS > 0:
                _POOL = CheckWorkers(_WORKERS)
            pool = _POOL
    return pool.check(reference, answer) if pool is not None else check_here(reference, answer)


def shutdown() -> None:
    """Stop the workers (also done at exit); the next check starts new ones."""
    global _POOL
    with _POOL_LOCK:
        pool, _POOL = _POOL, None
    if pool is not None:
        pool.close()


def _forget() -> None:
    """In a forked child: the parent's workers (their pipes) stay the parent's; the child starts its own."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


@atexit.register
def _at_exit() -> None:
    global _EXITING
    _EXITING = True
    shutdown()


os.register_at_fork(after_in_child=_forget)


def _serve() -> None:
    """A worker: one ``[reference, answer]`` JSON line in, ``true`` or ``false`` out, until stdin closes."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # a timeout is a verdict (False), not a notice
    check_here("1", "1.0")  # import math-verify and sympy before the first real check
    out = sys.stdout.buffer
    for line in sys.stdin.buffer:
        try:
            verdict = check_here(*json.loads(line))
        except Exception:
            verdict = False
        out.write(b"true\n" if verdict else b"false\n")
        out.flush()


if __name__ == "__main__":
    _serve()
