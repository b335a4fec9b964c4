"""The run directory: append-only JSONL records, so an interrupted run resumes where it stopped.

Nothing in a run directory is ever lost:

- **Readers never write records.** ``RunStore(path)`` (no config) is a reader: `load` parses and
  validates, and a bad line is a one-line `LbtError` naming ``file:line`` (exit code 2) with the file
  untouched. The last line may lack its newline (a run in progress, or one killed mid-write): a
  reader skips it.
- **One writer per directory.** ``RunStore(path, config)`` is the writer: it holds an exclusive
  ``flock`` on ``.lock`` (which names its pid) until `close` or exit. A second writer gets a one-line
  error naming that pid; the kernel drops the lock of a killed process, so a stale ``.lock`` file
  never blocks.
- **Lines are written whole.** Each record is one ``write`` of one complete line to an ``O_APPEND``
  descriptor. A torn final line (no newline: killed mid-write, or the disk filled) is moved by the
  writer to ``<stage>.jsonl.torn`` before its first append, never deleted. A failed write (disk
  full, read-only) stops the writer: later appends would glue onto the torn line.
- **Summaries are atomic**: written to a temporary name and renamed.

A directory holding a different run's config is refused.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import math
import os
import threading
import weakref
from pathlib import Path

import yaml

from .config import redact, resolve_aliases
from .errors import LbtEnvironmentError, LbtError

log = logging.getLogger("lbt_dspy")

# Config keys that do not change results: a rerun may change them.
_EXECUTION_KEYS = {"concurrency", "num_retries", "cache", "subsample_sizes", "subsample_repeats", "description",
                   "a6_pairs", "a6_subsets", "bootstrap_resamples"}  # report-only keys
LOCK_NAME = ".lock"

_NUMBER = (int, float)
# Types of the record fields a reader may require (`load(stage, required=...)`); an answer may be None
# (nothing parseable), a score may not (NaN is refused when parsing).
FIELD_TYPES: dict[str, tuple] = {
    "key": (str,), "tp": (str,), "sample": (int,), "student": (str,), "slot": (int,), "answer": (str, type(None)),
    "rationale": (str, type(None)), "score": _NUMBER, "pair": (int,), "plan": (int,), "q": (int,), "r": (int,),
}

# Writers open in this process: the CLI's Ctrl-C handler closes them under their locks before exiting.
_WRITERS: "weakref.WeakSet[RunStore]" = weakref.WeakSet()
_HELD: dict[str, "weakref.ref[RunStore]"] = {}  # realpath -> the writer of this process holding its lock


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a valid number in a record")


def os_error(exc: OSError, path: Path | str, what: str = "write") -> LbtError:
    """An `OSError` from writing `path` as the one-line error to show: disk full, read-only, permission
    denied (the environment: exit 1) or a path through a file (the input: exit 2)."""
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        return LbtEnvironmentError(f"{path}: no space left on device; finished records are kept: free some space "
                                   "and rerun the same command to resume")
    if code == errno.EROFS:
        return LbtEnvironmentError(f"{path}: read-only file system; cannot {what}: use another --output-path")
    if code in (errno.EACCES, errno.EPERM):
        return LbtEnvironmentError(f"{path}: permission denied; cannot {what}: use another --output-path")
    if code in (errno.ENOTDIR, errno.EEXIST):
        return LbtError(f"{path}: a parent of this path is a file, not a directory; use another --output-path")
    if code == errno.ENAMETOOLONG:
        return LbtError(f"{path}: file name too long")
    return LbtEnvironmentError(f"{path}: cannot {what}: {exc.strerror or exc}")


_ENCODE = json.JSONEncoder(ensure_ascii=False, allow_nan=False).encode  # one encoder, not one per record


def encode_line(record: dict) -> bytes:
    """One record as one JSON line in UTF-8. NaN/Infinity are refused (not JSON); a string no UTF-8 can
    hold (a lone surrogate, e.g. from a ``\\ud800`` escape in a dataset) is written as its JSON escape, so
    it loads back unchanged instead of crashing the write."""
    try:
        text = _ENCODE(record)
    except ValueError as exc:
        raise LbtError(f"record {str(record.get('key'))[:80]!r}: {exc} (NaN/Infinity cannot be recorded)") from None
    try:
        return (text + "\n").encode("utf-8")
    except UnicodeEncodeError:
        return (json.dumps(record, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def check_record(rec, required=()) -> str | None:
    """Why `rec` is not a valid record (None if it is): a JSON object with a string ``key`` and the
    `required` fields present with their `FIELD_TYPES` (an entry that is a tuple of names: one of them).
    NaN and Infinity never get here: they are refused when a line is parsed."""
    if not isinstance(rec, dict):
        return f"expected a JSON object, got {type(rec).__name__}"
    for entry in ("key", *required):
        names = entry if isinstance(entry, tuple) else (entry,)
        name = next((n for n in names if n in rec), None)
        if name is None:
            return f"record has no {' or '.join(repr(n) for n in names)}"
        val, types = rec[name], FIELD_TYPES.get(name)
        if types is None:
            continue
        if isinstance(val, bool) or not isinstance(val, types):
            return f"{name!r} is {type(val).__name__} ({str(val)[:40]!r}), expected {'/'.join(t.__name__ for t in types)}"
        if isinstance(val, float) and not math.isfinite(val):
            return f"{name!r} is {val}, not a finite number"
    return None


class RunStore:
    """A resumable run directory: the writer (with `config`) or a reader (without).

    Args:
        path: The directory. The writer creates it; a reader needs it to exist.
        config: The run's config. Given: this store is the run's one writer (it takes the directory's lock),
            saves the config (secrets redacted) on first use and compares it on reruns. None: a reader,
            which never changes a record.
        required: Per stage, the fields every record must have (see `check_record`); `load` checks them,
            so a resume meets a hand-edited record as a file:line error, not as a crash later.

    Example:
        >>> with RunStore("/tmp/run", {"num_rationales": 2}) as store:  # doctest: +SKIP
        ...     store.append("teach", {"key": "tp0/0", "answer": "4"})
        >>> RunStore("/tmp/run").load("teach")["tp0/0"]["answer"]  # doctest: +SKIP
        '4'
    """

    def __init__(self, path: str | Path, config: dict | None = None, required: dict | None = None):
        self.path = Path(path)
        self.writer = config is not None
        self.required = dict(required or {})
        self._lock = threading.RLock()  # re-entrant: the Ctrl-C handler may run on the appending thread
        self._fds: dict[str, int] = {}
        self._lock_fd: int | None = None
        self._checked: set[str] = set()  # stages whose torn tail the writer has dealt with
        self._broken: LbtError | None = None
        self.closed = False
        if self.path.exists() and not self.path.is_dir():
            raise LbtError(f"{self.path}: output path exists and is not a directory")
        if not self.writer:
            return
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(exc, self.path, "create the run directory") from None
        self._take_lock()
        self._preloaded: dict[str, dict] = {}
        try:
            self._check_config(redact(config))
            # Every stage with known fields is checked before the run adds anything: a bad line anywhere
            # stops it with nothing changed. Kept for the first `load` of the stage (no second read).
            for stage in self.required:
                if (self.path / f"{stage}.jsonl").exists():
                    self._preloaded[stage] = self.load(stage)
        except BaseException:
            self.close()
            raise
        _WRITERS.add(self)

    # --- one writer per directory ------------------------------------------------------------------
    def _take_lock(self) -> None:
        lock_path = self.path / LOCK_NAME
        key = os.path.realpath(self.path)
        earlier = _HELD.get(key)
        earlier = earlier() if earlier else None
        if earlier is not None and not earlier.closed:
            # The same process may reopen a run (a rerun after an error in one Python session): the new
            # writer takes over, and the earlier one, closed, can write nothing more.
            earlier.close()
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise os_error(exc, lock_path, "take the run directory's lock") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise LbtError(f"{self.path}: in use by another lbt process (pid {holder}); wait for it to end or "
                           "stop it, or use another --output-path") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd
        _HELD[key] = weakref.ref(self)

    def __enter__(self) -> "RunStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _check_config(self, config: dict) -> None:
        saved_path = self.path / "config.yaml"
        if saved_path.exists():
            saved = resolve_aliases(self.read_config())  # a run saved with the seed's key names resumes
            for key in sorted(set(saved) | set(config)):
                if key in _EXECUTION_KEYS:
                    continue
                if saved.get(key) != config.get(key):
                    raise LbtError(f"{self.path}: holds a different run (config key {key!r} differs); "
                                   "use another --output-path")
        self.write_text("config.yaml", yaml.safe_dump(config, sort_keys=False, allow_unicode=True))

    # --- records -----------------------------------------------------------------------------------
    def load(self, stage: str, required=None) -> dict[str, dict]:
        """Records of a stage by key, each checked (`check_record`: a ``key``, the `required` fields -- default:
        the store's for this stage -- with their types, no NaN). A bad line raises `LbtError` naming
        ``file:line`` and changes nothing. A last line without its newline is skipped by a reader; the
        writer moves it to ``<stage>.jsonl.torn``."""
        if required is None and stage in getattr(self, "_preloaded", {}):
            return self._preloaded.pop(stage)
        required = self.required.get(stage, ()) if required is None else required
        file = self.path / f"{stage}.jsonl"
        with self._lock:
            if self.writer:
                self._set_aside_torn_tail(stage)
            try:
                data = file.read_bytes()
            except FileNotFoundError:
                return {}
            except OSError as exc:
                raise os_error(exc, file, "read") from None
        records: dict[str, dict] = {}
        lines = data.split(b"\n")
        if lines[-1]:
            log.warning("%s: the last line is incomplete (a run in progress, or killed mid-write); skipped", file)
        for n, raw in enumerate(lines[:-1], 1):
            try:
                rec = json.loads(raw, parse_constant=_reject_constant)
            except (ValueError, RecursionError) as exc:
                what = "a blank line" if not raw.strip() else f"not valid JSON ({str(exc)[:80]})"
                raise LbtError(f"{file}:{n}: {what}; the run directory was not changed: fix or delete the line") from None
            problem = check_record(rec, required)
            if problem:
                raise LbtError(f"{file}:{n}: {problem}; the run directory was not changed: fix or delete the line")
            records[rec["key"]] = rec
        return records

    def _set_aside_torn_tail(self, stage: str) -> None:
        """Writer only, once per stage before anything is appended: bytes after the last newline are a line
        torn by a kill (or a full disk); they move to ``<stage>.jsonl.torn``, then the stage is cut there."""
        if stage in self._checked:
            return
        file = self.path / f"{stage}.jsonl"
        try:
            with open(file, "rb") as fh:
                data = fh.read()
        except FileNotFoundError:
            self._checked.add(stage)
            return
        end = data.rfind(b"\n") + 1
        if end < len(data):
            torn = data[end:]
            quarantine = file.with_name(file.name + ".torn")
            try:
                with open(quarantine, "ab") as q:  # first kept, then cut: never lost in between
                    q.write(torn + b"\n")
                    q.flush()
                    os.fsync(q.fileno())
                with open(file, "r+b") as fh:
                    fh.truncate(end)
            except OSError as exc:
                raise os_error(exc, quarantine, "set the torn line aside") from None
            log.warning("%s: a line torn by an interrupted write (%d bytes) was moved to %s", file, len(torn),
                        quarantine.name)
        self._checked.add(stage)

    def append(self, stage: str, record: dict) -> None:
        """Append one finished record (must carry a unique ``key``) as one whole line."""
        if not self.writer:
            raise LbtError(f"{self.path}: opened for reading; records are written only by the run's writer")
        line = encode_line(record)
        with self._lock:
            if self._broken is not None:
                raise self._broken
            if self.closed:
                raise LbtError(f"{self.path}: this run store was closed (another writer in this process took over)")
            fd = self._fds.get(stage)
            try:
                if fd is None:
                    self._set_aside_torn_tail(stage)
                    fd = self._fds[stage] = os.open(self.path / f"{stage}.jsonl",
                                                    os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                written = _write(fd, line)
                if written != len(line):  # only a full disk cuts a write to a regular file short
                    raise OSError(errno.ENOSPC, "short write")
            except OSError as exc:
                self._broken = os_error(exc, self.path / f"{stage}.jsonl", "append a record")
                raise self._broken from None

    def close(self) -> None:
        """Close the record files and release the directory's lock (the kernel also drops it at exit)."""
        with self._lock:
            for fd in self._fds.values():
                try:
                    os.close(fd)
                except OSError:
                    pass
            self._fds.clear()
            if self._lock_fd is not None:
                try:
                    os.close(self._lock_fd)  # releases the flock
                except OSError:
                    pass
                self._lock_fd = None
            self.closed = True

    # --- summaries ---------------------------------------------------------------------------------
    def write_text(self, name: str, text: str) -> Path:
        """Write a summary atomically (temporary name, then rename). Text no UTF-8 can hold (a lone
        surrogate) is written backslash-escaped rather than failing."""
        target = self.path / name
        tmp = target.with_name(f".{target.name}.tmp{os.getpid()}")
        try:
            tmp.write_bytes(text.encode("utf-8", errors="backslashreplace"))
            os.replace(tmp, target)
        except OSError as exc:
            try:
                tmp.unlink(missing_ok=True)
            except OSError:
                pass
            raise os_error(exc, target) from None
        return target

    def write_json(self, name: str, obj) -> Path:
        try:
            text = json.dumps(obj, indent=1, ensure_ascii=False, allow_nan=False)
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = json.dumps(obj, indent=1, ensure_ascii=True, allow_nan=False)
        except ValueError as exc:
            raise LbtError(f"{self.path / name}: {exc} (NaN/Infinity are not JSON)") from None
        return self.write_text(name, text)

    def read_config(self) -> dict:
        """The run's saved config; a missing, unreadable or broken ``config.yaml`` is a one-line `LbtError`."""
        file = self.path / "config.yaml"
        if not file.exists():
            raise LbtError(f"{self.path}: not a run directory (no config.yaml)")
        try:
            saved = yaml.safe_load(file.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f"{file}:{mark.line + 1}" if mark else str(file)
            raise LbtError(f"{where}: the run's config.yaml is broken (invalid YAML: "
                           f"{getattr(exc, 'problem', None) or exc}); restore it or use another --output-path") from None
        except UnicodeDecodeError:
            raise LbtError(f"{file}: the run's config.yaml is not UTF-8 text; restore it or use another --output-path") from None
        except OSError as exc:
            raise os_error(exc, file, "read") from None
        if saved is None:
            return {}
        if not isinstance(saved, dict):
            raise LbtError(f"{file}: the run's config.yaml is not a mapping; restore it or use another --output-path")
        return saved


def _write(fd: int, data: bytes) -> int:
    """One ``write`` (a seam for fault-injection tests)."""
    return os.write(fd, data)


def close_all_writers() -> None:
    """Close every writer of this process under its lock and keep the lock held, so no record is half
    written and none is written after (the CLI's Ctrl-C handler calls this, then exits at once)."""
    for store in list(_WRITERS):
        store._lock.acquire(timeout=1.0)  # never released: the process is about to exit (1 s: a stuck disk)
        for fd in list(store._fds.values()):
            try:
                os.close(fd)
            except OSError:
                pass
        store._fds.clear()
        store.closed = True
