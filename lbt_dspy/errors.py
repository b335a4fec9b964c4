"""The exceptions users see as one line instead of a traceback, and the exit code each one gives.

- `LbtError`: bad input (config, data file, record, output path): exit code 2.
- `LbtEnvironmentError`: the environment failed (full disk, read-only directory): exit code 1.
- `BackendDown`: an endpoint's circuit breaker is open (the server is dead); exit code 1. It is raised
  by the engine *inside* DSPy's LM call, so DSPy may wrap it (``LMUnexpectedError ... from BackendDown``):
  find it with `backend_down(exc)`, which walks the ``__cause__``/``__context__`` chain.
"""

from __future__ import annotations


class LbtError(Exception):
    """A user-facing error: bad config, bad input file, unusable output path.

    The message names the file, key or line at fault; the CLI prints it on one line and exits
    with `exit_code` (2: input).
    """

    exit_code = 2


class LbtEnvironmentError(LbtError):
    """The environment failed, not the input (disk full, read-only directory, dead server): exit code 1.

    Example:
        >>> raise LbtEnvironmentError("runs/x/exam.jsonl: no space left on device; free space and rerun")  # doctest: +SKIP
    """

    exit_code = 1


class BackendDown(LbtEnvironmentError):
    """An endpoint's circuit breaker is open: it failed `failures` consecutive calls (connection refused or
    reset, timeouts, 5xx), so calls to it fail at once instead of each being retried.

    Not retried by DSPy (it is not one of DSPy's retryable LM errors). A run that meets it stops: it
    submits no more calls, abandons the queued ones, and ends with this one line (exit code 1); the
    finished records are kept and a rerun resumes.

    Args:
        endpoint: The endpoint (``api_base``), or several joined with ", " when every replica is down.
        failures: Consecutive failures that opened the breaker.
        last_error: The last failure seen (one line).

    Example:
        >>> str(BackendDown("http://127.0.0.1:8000/v1", 5)).split(";")[0]
        'http://127.0.0.1:8000/v1: backend down (5 consecutive failures)'
    """

    def __init__(self, endpoint: str, failures: int, last_error: str = ""):
        self.endpoint = endpoint
        self.failures = failures
        self.last_error = last_error
        last = f", last: {last_error}" if last_error else ""
        super().__init__(f"{endpoint}: backend down ({failures} consecutive failures{last}); "
                         "start the server and rerun the same command to resume")

    def __reduce__(self):  # picklable across processes (its __init__ takes three arguments)
        return (type(self), (self.endpoint, self.failures, self.last_error))


def backend_down(exc: BaseException | None) -> BackendDown | None:
    """The `BackendDown` that caused `exc` (itself, or found on its cause/context chain), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, BackendDown):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None
