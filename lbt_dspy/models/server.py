"""A model server lbt starts and stops: one lifecycle for vLLM (the engine) and `transformers serve` (the fallback).

The server is a process of its own on a free loopback port, in its own session, killed with lbt (even by SIGKILL,
through the parent-death signal). A server that cannot start is one line naming why and its log: the port is
taken, memory ran out, the checkpoint cannot be loaded, the CPU is not supported, or its last log line.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from ..errors import LbtEnvironmentError

# What a server's log says when it cannot start, and the one line lbt prints for it (first match wins).
START_FAILURES = [
    (re.compile(r"address already in use|errno 98", re.I), "port {port} is taken"),
    (re.compile(r"out of memory|cannot allocate memory|memoryerror|insufficient memory|not enough memory|"
                r"no available memory for the cache blocks|kv cache.*(too|exceed)", re.I), "not enough memory"),
    (re.compile(r"illegal instruction|not supported on (this|your) (cpu|platform)|unsupported (cpu|isa)|"
                r"requires avx", re.I), "this CPU is not supported"),
    (re.compile(r"(can't|cannot|could not|failed to) load|unrecognized model|no such file or directory|"
                r"not a valid model|does not appear to have a file named|safetensors.*error|config\.json", re.I),
     "the checkpoint cannot be loaded"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:
    """In the server child: get SIGKILL when lbt dies, even by SIGKILL (Linux), so no server is orphaned."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def start_failure(log_tail: str, port: int) -> str:
    """Why a server did not start, in a few words, from the end of its log."""
    for pattern, reason in START_FAILURES:
        if pattern.search(log_tail):
            return reason.format(port=port)
    lines = [ln.strip() for ln in log_tail.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "it wrote nothing"


class LocalServer:
    """An OpenAI-compatible server process on a loopback port; subclasses give `command` and `env`.

    Args:
        checkpoint: The model directory served.
        port: Port to listen on; a free one when None.
        log_path: File for the server's output; a temp file when None.
        startup_timeout: Seconds to wait for ``/health``.
    """

    kind = "server"

    def __init__(self, checkpoint: str | Path, port: int | None = None, log_path: str | Path | None = None,
                 startup_timeout: float = 180.0):
        self.checkpoint = Path(checkpoint)
        self.port = port or free_port()
        self.log_path = Path(log_path) if log_path else Path(tempfile.mkstemp(prefix="lbt-serve-", suffix=".log")[1])
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None

    @property
    def model(self) -> str:
        """The model name requests carry: the served path."""
        return str(self.checkpoint)

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/metrics"

    def command(self) -> list[str]:
        raise NotImplementedError

    def env(self) -> dict:
        return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}

    def start(self) -> "LocalServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True, preexec_fn=_die_with_parent)
        except OSError as exc:
            raise LbtEnvironmentError(f"{self.kind} could not start: {exc.strerror or exc} "
                                      f"({self.command()[0]})") from None
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        self._fail(f"did not answer /health within {self.startup_timeout:.0f} s")

    def _fail(self, what: str):
        tail = self.log_path.read_text(errors="replace")[-6000:] if self.log_path.exists() else ""
        self.stop()
        raise LbtEnvironmentError(f"{self.kind} for {self.checkpoint} {what}: {start_failure(tail, self.port)}; "
                                  f"log: {self.log_path}")

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        """SIGTERM to the server's process group (15 s to exit), then SIGKILL to whatever is left of it: also
        when the server process itself already died (killed), whose children (vLLM's engine core and worker)
        would otherwise outlive it, holding their memory."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 15)
                self.proc.wait(timeout=15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(self.proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc = None

    def __enter__(self) -> "LocalServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
