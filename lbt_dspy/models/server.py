"""A model server lbt starts and stops: one lifecycle for vLLM (the engine) and `transformers serve` (the fallback).

The server is a process of its own on a free loopback port, in a session and process group of its own with a
guard (`server_guard`, POSIX) that kills the whole group when lbt dies, even by SIGKILL, or when the server exits,
so none of its processes (vLLM's engine core and workers) outlive it. A server that cannot start is one line
naming why and its log: the port is taken, memory ran out, the checkpoint cannot be loaded, the CPU is not
supported, or its last log line.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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


GUARD = Path(__file__).with_name("server_guard.py")
_ports_given: set = set()
_ports_lock = threading.Lock()


def free_port() -> int:
    """A free loopback port, never one given before in this process: servers started together get distinct ones."""
    with _ports_lock:
        while True:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            if port not in _ports_given:
                _ports_given.add(port)
                return port


def guarded(cmd: list) -> list:
    """`cmd` run under `server_guard` (POSIX; elsewhere `cmd` itself): its whole process group dies with lbt."""
    if os.name != "posix" or not sys.executable:
        return cmd
    return [sys.executable, "-I", "-S", str(GUARD), str(os.getpid()), *cmd]


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
        self.proc: subprocess.Popen | None = None  # the guard (`guarded`), whose exit is the server's
        self._cancel = threading.Event()

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
        """Start the server and wait for its ``/health``; a one-line `LbtEnvironmentError` if it cannot start (or
        `cancel` was called meanwhile: another replica failed)."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        if shutil.which(cmd[0]) is None:  # the guard would run it: say so here, as Popen would
            raise LbtEnvironmentError(f"{self.kind} could not start: no such program ({cmd[0]})")
        log = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(guarded(cmd), stdout=log, stderr=subprocess.STDOUT, env=self.env(),
                                         start_new_session=True)
        except OSError as exc:
            raise LbtEnvironmentError(f"{self.kind} could not start: {exc.strerror or exc} ({cmd[0]})") from None
        finally:
            log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._cancel.is_set():
                self.stop()
                raise LbtEnvironmentError(f"{self.kind} for {self.checkpoint} on port {self.port}: start cancelled")
            if self.proc.poll() is not None:
                self._fail(f"exited with code {self.proc.returncode}")
            if self.healthy():
                return self
            time.sleep(0.5)
        self.stop()
        self._fail(f"did not answer /health within {self.startup_timeout:.0f} s")

    def cancel(self) -> None:
        """Make a `start` in progress (in another thread) stop the server and raise."""
        self._cancel.set()

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
        would otherwise outlive it, holding their memory (the guard kills them too, on Linux)."""
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
