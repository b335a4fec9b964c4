"""Running one program in the sandbox: start, feed, read with caps, kill, clean up."""

from __future__ import annotations

import atexit
import ctypes
import ast
import functools
import logging
import marshal
import math
import os
import resource
import secrets
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from . import bootstrap
from .cgroup import MemoryCgroup
from .cgroup import disable as cgroup_disable
from .cgroup import report as cgroup_report
from .limits import SandboxLimits, SandboxResult
from .modes import PYTHON_FLAGS, WORK_DIR, Mode, candidate_modes, exposed, hidden, interpreter, ipc_caps, root_spec

log = logging.getLogger(__name__)

try:  # PR_SET_PDEATHSIG for the child we start: it dies when the thread that started it does
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # pragma: no cover - not Linux
    _prctl = None


@functools.lru_cache(maxsize=1)
def _boot_code() -> bytes:
    # Compiled once here: compiling the bootstrap's source in every child cost more than the rest
    # of its start-up. Same interpreter on both sides, so marshal's format matches.
    source = Path(bootstrap.__file__).read_text(encoding="utf-8")
    return marshal.dumps(compile(source, bootstrap.__file__, "exec"))


# The child's whole command line: load the compiled bootstrap; it reads its config from argv[-1].
_LOADER = "import marshal, sys\nexec(marshal.loads(open(sys.argv[1], 'rb').read()))\n"


# Process groups of the sandboxes running now: killed on Ctrl-C in run_many and at exit, so that
# no program outlives an interrupted host (SIGKILL of the host is covered by the death signal).
_live: set[int] = set()
_live_lock = threading.Lock()


def _kill_live() -> None:
    with _live_lock:
        groups = list(_live)
    for pgid in groups:
        _killpg(pgid)


atexit.register(_kill_live)


def _fresh_uid() -> int:
    # Far above real accounts; random so parallel sandboxes share neither RLIMIT_NPROC nor signals.
    return (1 << 30) + secrets.randbelow(1 << 29)


def _user_process_count(uid: int) -> int:
    n = 0
    with os.scandir("/proc") as it:
        for entry in it:
            if entry.name.isdigit():
                try:
                    n += entry.stat().st_uid == uid
                except OSError:
                    pass
    return n


def _preexec(values: tuple, parent: int, cgroup_procs: str | None, uid: int | None) -> None:
    # Runs in the forked child before exec: plain system calls only. First into the run's memory
    # cgroup (still with the host's credentials: the cgroup's files are the host's), so that every
    # process the program ever starts is in it; then the uid drop (as Popen's user/group/extra_groups
    # would do it, which happens before this function: too early for the cgroup), then the limits.
    if cgroup_procs is not None:
        fd = os.open(cgroup_procs, os.O_WRONLY)
        try:
            os.write(fd, b"%d" % os.getpid())
        finally:
            os.close(fd)
    if uid is not None:
        os.setgroups([])
        os.setregid(uid, uid)
        os.setreuid(uid, uid)
    for which, value in values:
        resource.setrlimit(which, value)
    if _prctl is not None:
        _prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the host died before the death signal was armed
        os._exit(1)


def _rlimits(limits: SandboxLimits, nproc: int) -> tuple:
    cpu = max(1, math.ceil(limits.cpu_seconds))
    mem = int(limits.memory_mb) * 1024 * 1024
    fsize = int(limits.max_file_mb) * 1024 * 1024
    wanted = (
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_CPU, cpu, cpu + 1),  # SIGXCPU first, then SIGKILL at the hard limit
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_NPROC, nproc, nproc),
        (resource.RLIMIT_MSGQUEUE, 1 << 20, 1 << 20),  # POSIX message queues: 1 MiB per uid
    )
    out = []
    for which, soft, hard in wanted:  # an unprivileged host cannot raise its own hard limits
        cap = resource.getrlimit(which)[1]
        if cap != resource.RLIM_INFINITY:
            soft, hard = min(soft, cap), min(hard, cap)
        out.append((which, (soft, hard)))
    return tuple(out)


def _exited(pid: int) -> bool:
    """Has `pid` exited? Leaves the zombie in place so its pid (= our pgid) cannot be reused."""
    try:
        return os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _kill_stragglers(uid: int | None, token: str) -> None:
    """Plain mode: SIGKILL processes of the sandbox uid, or carrying the run's marker, that left
    the process group. Never touches uid 0 or processes without the marker."""
    me = os.getpid()
    for _ in range(20):
        victims = []
        with os.scandir("/proc") as it:
            for entry in it:
                if not entry.name.isdigit() or int(entry.name) == me:
                    continue
                try:
                    if uid is not None:
                        if entry.stat().st_uid == uid and uid > 0:
                            victims.append(int(entry.name))
                    elif entry.stat().st_uid == os.geteuid():
                        with open(f"/proc/{entry.name}/environ", "rb") as fh:
                            if token.encode() in fh.read():
                                victims.append(int(entry.name))
                except OSError:
                    pass
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)


def _read_output(proc: subprocess.Popen, fds: list[int], deadline: float, cap: int,
                 cgroup: MemoryCgroup | None = None) -> tuple[list[bytes], str]:
    """Read the `fds` until EOF, the deadline, `cap` bytes on one, or (with a `cgroup`) the first
    OOM kill in the run's cgroup. Returns (contents, reason)."""
    bufs = {fd: bytearray() for fd in fds}
    sel = selectors.DefaultSelector()
    for fd in fds:
        sel.register(fd, selectors.EVENT_READ)
    reason, exited_at, looked = "", None, 0.0
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
                break
            if cgroup is not None and now - looked >= 0.05:
                looked = now
                if cgroup.oom_kills():  # one process killed: the program is over (v2 does it itself)
                    reason = "memory"
                    break
            if exited_at is None and _exited(proc.pid):
                exited_at = now
                _killpg(proc.pid)  # leftovers in the group would keep the pipes open
            if exited_at is not None and now - exited_at > 0.5:
                break  # a process outside the group holds the pipes; stop waiting for it
            for key, _ in sel.select(min(deadline - now, 0.1)):
                chunk = os.read(key.fd, 65536)
                if not chunk:
                    sel.unregister(key.fd)
                    continue
                buf = bufs[key.fd]
                room = cap - len(buf)
                buf += chunk[:room]
                if len(chunk) > room:
                    reason = "output_limit"
            if reason:
                break
    finally:
        sel.close()
    return [bytes(bufs[fd]) for fd in fds], reason


def _rmtree(path: str) -> None:
    def fix(func, p, _exc):  # the program may have chmod-ed its own dirs to 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _values(raw: bytes, n: int) -> list | None:
    """The call results from the results pipe: exactly `n` well-formed lines, else None."""
    try:
        lines = raw.decode("utf-8").splitlines()
        if len(lines) != n:
            return None
        out = []
        for line in lines:  # untrusted: parsed as a literal, never evaluated
            item = ast.literal_eval(line)
            if "ok" in item:
                out.append(bootstrap.decode_value(item["ok"]))
            else:
                out.append(bootstrap.CallFailed(f"raised {str(item.get('raised'))[:100]}"))
        return out
    except (ValueError, TypeError, KeyError, AttributeError, SyntaxError, RecursionError, MemoryError):
        return None


def run_in_mode(code: str, limits: SandboxLimits, stdin: str, mode: Mode,
                calls: tuple | None) -> tuple[SandboxResult, int | None]:
    """One run of `code` under `mode` (see :func:`run_python`); also returns the uid it ran as."""
    start = time.monotonic()
    base = os.path.realpath(tempfile.mkdtemp(prefix="lbt-sandbox-"))
    results_r = results_w = life_r = life_w = None
    cgroup = None
    try:
        os.chmod(base, 0o711)  # the sandbox uid may traverse to its work dir, not list the base
        host_work = os.path.join(base, "work")
        os.mkdir(host_work, 0o700)
        code_path = os.path.join(host_work, "main.py")
        with open(code_path, "w", encoding="utf-8", errors="replace") as fh:  # lone surrogates
            fh.write(code)
        boot_path = os.path.join(host_work, "boot.bin")
        with open(boot_path, "wb") as fh:
            fh.write(_boot_code())
        calls_path = None
        if calls is not None:  # a Python literal of plain data, written by us: the child evals it
            calls_path = os.path.join(host_work, "calls.py")
            with open(calls_path, "w", encoding="utf-8", errors="backslashreplace") as fh:
                fh.write(repr({"target": calls[0], "calls": [bootstrap.encode_value(c) for c in calls[1]]}))
            results_r, results_w = os.pipe()
        uid = _fresh_uid() if mode.drop_uid else None
        popen_uid = None  # the uid the child drops to before exec (else: the bootstrap, later)
        if uid is not None and not mode.drop_in_child:
            os.chown(host_work, uid, uid)
            for p in (code_path, calls_path, boot_path):
                if p:
                    os.chown(p, uid, uid)
            popen_uid = uid
        if uid is not None:  # + unshare and our init when they run as that uid too
            nproc = limits.max_processes + (2 if mode.prefix and not mode.drop_in_child else 0)
        else:  # RLIMIT_NPROC counts all processes of the host user
            nproc = _user_process_count(os.getuid()) + limits.max_processes + 2
        if mode.namespaces:  # PID 1 exits when this closes: when we are gone, however we died
            life_r, life_w = os.pipe()
        token = secrets.token_hex(8)
        root_ns = mode.name == "root-ns"
        work = WORK_DIR if root_ns else host_work
        cfg = {"code": code_path, "calls": calls_path, "results_fd": results_w, "work": work, "guards": True,
               "init": mode.namespaces, "uid": uid if mode.drop_in_child else None, "root": None, "ipc": None,
               "lifeline": life_r}
        if root_ns:
            new_root = os.path.join(base, "root")
            os.mkdir(new_root, 0o700)
            cfg["root"] = root_spec(new_root, uid, limits.max_disk_mb)
            cfg["ipc"] = ipc_caps(limits.max_disk_mb)
        argv = [*mode.prefix, *(["--"] if mode.prefix else []), interpreter(), *PYTHON_FLAGS,
                "-c", _LOADER, boot_path, repr(cfg)]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": work, "TMPDIR": work, "LBT_SANDBOX_RUN": token}
        stdin_file = None
        if stdin:
            stdin_path = os.path.join(base, "stdin")
            with open(stdin_path, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(stdin)
            stdin_file = open(stdin_path, "rb")
        # None: RLIMIT_AS only (one process needs nothing more; or no cgroup can be made here)
        cgroup = MemoryCgroup.create(limits.total_memory_bytes) if limits.needs_memory_cgroup else None
        try:
            while True:
                try:
                    proc = subprocess.Popen(
                        argv, stdin=stdin_file or subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                        cwd=host_work, env=env, close_fds=True, start_new_session=True,
                        pass_fds=tuple(fd for fd in (results_w, life_r) if fd is not None),
                        preexec_fn=functools.partial(_preexec, _rlimits(limits, nproc), os.getpid(),
                                                     cgroup.procs if cgroup else None, popen_uid))
                except (OSError, subprocess.SubprocessError) as exc:
                    if cgroup is None:
                        return SandboxResult("setup_error", None, "", str(exc), time.monotonic() - start, False,
                                             f"could not start the sandbox: {exc}"), uid
                    # Perhaps joining the cgroup failed (the child cannot say which step did): if
                    # so, no more cgroups in this host; this run starts once more without one.
                    failed, cgroup = cgroup, None
                    if not failed.join_works():
                        cgroup_disable(f"a process could not join a cgroup made under {os.path.dirname(failed.path)}")
                    failed.remove()
                    continue
                break
        finally:
            if stdin_file:
                stdin_file.close()
            for fd in (results_w, life_r):
                if fd is not None:
                    os.close(fd)
            results_w = life_r = None
        with _live_lock:
            _live.add(proc.pid)
        try:
            fds = [proc.stdout.fileno(), proc.stderr.fileno()] + ([results_r] if results_r is not None else [])
            bufs, reason = _read_output(proc, fds, start + limits.wall_seconds, limits.max_output_bytes, cgroup)
        finally:  # also on KeyboardInterrupt: never leave the program running
            _killpg(proc.pid)
            returncode = proc.wait()
            proc.stdout.close()
            proc.stderr.close()
            with _live_lock:
                _live.discard(proc.pid)
        out, err = bufs[0], bufs[1]
        if mode.namespaces and 128 < returncode <= 128 + 64 and reason in ("", "memory"):
            returncode = 128 - returncode  # our init's encoding of "killed by signal N"
        if cgroup is not None and not reason and cgroup.oom_kills():  # in its last moments
            reason = "memory"
        if mode.name == "plain":
            _kill_stragglers(uid, token)
    finally:
        if cgroup is not None:  # kills what is left in it, then removes it; never raises
            cgroup.remove()
        for fd in (results_r, results_w, life_r, life_w):
            if fd is not None:
                os.close(fd)
        _rmtree(base)
    result = _result(reason, returncode, out, err, time.monotonic() - start, limits)
    if calls is not None and reason != "output_limit":
        result.values = _values(bufs[2], len(calls[1]))
    return result, uid


def _result(reason: str, rc: int, out: bytes, err: bytes, duration: float, limits: SandboxLimits) -> SandboxResult:
    cap = limits.max_output_bytes
    truncated = reason == "output_limit"
    if reason == "output_limit":
        status, detail = "output_limit", f"wrote more than {cap} bytes to a stream; killed"
    elif reason == "timeout":
        status, detail = "timeout", f"wall-clock limit of {limits.wall_seconds}s exceeded; killed"
    elif reason == "memory":
        total = limits.total_memory_bytes // 2 ** 20
        status, detail = "killed", (f"memory limit (total over all processes) exceeded: the program's processes "
                                    f"together needed more than total_memory_mb={total} MiB; killed")
    elif rc == bootstrap.SETUP_FAILED_RC and err.startswith(bootstrap.SETUP_FAILED_MSG):
        status, detail = "setup_error", err.decode("utf-8", "replace").strip()
    elif rc < 0 and -rc == signal.SIGXCPU:
        status, detail = "timeout", f"CPU limit of {limits.cpu_seconds}s exceeded"
    elif rc < 0:
        try:
            name = signal.Signals(-rc).name
        except ValueError:
            name = f"signal {-rc}"
        status, detail = "killed", f"killed by {name}"
        if -rc == signal.SIGKILL:
            detail += " (e.g. the CPU hard limit, 1 s after an ignored SIGXCPU)"
    elif rc == 0:
        status, detail = "ok", ""
    else:
        status, detail = "error", f"exit status {rc}"

    def dec(b: bytes) -> str:
        return b.decode("utf-8", "replace")

    return SandboxResult(status, rc, dec(out), dec(err), duration, truncated, detail)


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "", *,
               isolate: bool = True, calls: tuple | None = None) -> SandboxResult:
    """Run `code` as the main program of a fresh sandboxed Python process.

    Args:
        code: Python source to run (as ``__main__``; as the module ``__solution__`` with `calls`).
        limits: Resource limits; defaults to :class:`SandboxLimits`.
        stdin: Text fed to the program's standard input.
        isolate: Use the kernel layers (namespaces, uid drop) where available. ``False`` leaves
            only rlimits and the Python-level guards, for testing those guards (as root this
            means no process limit either: ``RLIMIT_NPROC`` does not bind root).
        calls: ``(target, [[args, kwargs], ...])``: after running `code`, call `target`
            (``"f"`` or ``"Solution.f"``) on each, and return the results as plain data in
            :attr:`SandboxResult.values` (a dedicated pipe; the program's prints do not mix in).

    Returns:
        A :class:`SandboxResult`; never raises for anything the program does.

    Example:
        >>> run_python("import sys; print(sys.stdin.read().upper())", stdin="hi").stdout
        'HI\\n'
        >>> run_python("def f(x):\\n    return [x, x]", calls=("f", [[[1], {}], [["a"], {}]])).values
        [[1, 1], ['a', 'a']]
    """
    mode = select_mode(isolate)
    return run_in_mode(code, limits or SandboxLimits(), stdin, mode, calls)[0]


def run_many(codes, limits: SandboxLimits | None = None, max_workers: int | None = None,
             stdin: str = "", *, isolate: bool = True, calls: list | None = None) -> list[SandboxResult]:
    """Run several programs in parallel (each in its own sandbox), results in input order.

    Args:
        codes: Iterable of Python sources.
        limits: Limits for every program.
        max_workers: Programs run at once; defaults to the number of CPU cores.
        stdin: Standard input for every program.
        isolate: As in :func:`run_python`.
        calls: One `calls` argument of :func:`run_python` per program (or None).

    Example:
        >>> [r.stdout for r in run_many(["print(1)", "print(2)"])]
        ['1\\n', '2\\n']
    """
    codes = list(codes)
    if not codes:
        return []
    calls = list(calls) if calls is not None else [None] * len(codes)
    select_mode(isolate)  # probe once, before the threads race for it
    workers = max(1, min(max_workers or os.cpu_count() or 1, len(codes)))

    def one(job):
        return run_python(job[0], limits, stdin, isolate=isolate, calls=job[1])

    if workers == 1:
        return [one(job) for job in zip(codes, calls)]
    with ThreadPoolExecutor(workers, thread_name_prefix="lbt-sandbox") as pool:
        try:
            return list(pool.map(one, zip(codes, calls)))
        except BaseException:  # Ctrl-C: stop every sandbox now rather than at its wall limit
            _kill_live()
            raise


# --------------------------------------------------------------------------------------------
# The probe: which mode works here (it runs a program, so it lives beside run_in_mode)
# --------------------------------------------------------------------------------------------
_PROBE = ("import os\nprint('lbt-probe', os.getuid(), open('/proc/self/net/dev').read().count(':'), "
          "int(os.path.exists('/etc')))\n")
_probe_lock = threading.Lock()
_probed: dict[bool, tuple[Mode, dict]] = {}


def select_mode(isolate: bool) -> Mode:
    with _probe_lock:
        if isolate not in _probed:
            _probed[isolate] = _probe(isolate)
        return _probed[isolate][0]


def isolation(isolate: bool = True) -> dict:
    """Which protection layers are active for sandboxed runs on this machine (probed once).

    Args:
        isolate: The ``isolate`` argument of :func:`~lbt_dspy.sandbox.run_python`.

    Returns:
        ``{"mode", "uid_drop", "network_namespace", "pid_namespace", "ipc_namespace",
        "private_root" (the host's files hidden but for "exposed"), "exposed", "hidden_inside"
        (directories of "exposed" shown empty), "parent_death",
        "total_memory_cgroup" (whether a per-run cgroup bounds the memory of all the program's
        processes together), "cgroup_memory" (which cgroup, or why none: then only ``RLIMIT_AS``
        per process), "python_guards", "rlimits"}``.

    Example:
        >>> isolation()["python_guards"]
        True
    """
    select_mode(isolate)
    return {**_probed[isolate][1], **cgroup_report()}  # the cgroup part as of now: a failure may turn it off


def _probe(isolate: bool) -> tuple[Mode, dict]:
    modes = candidate_modes() if isolate else [Mode("plain")]
    for mode in modes:
        res, uid = run_in_mode(_PROBE, SandboxLimits(wall_seconds=20), "", mode, None)
        words = res.stdout.split()
        ok = res.passed and len(words) == 4 and words[0] == "lbt-probe"
        if ok and mode.drop_uid:
            ok = words[1] == str(uid)
        if ok and mode.namespaces:
            ok = words[2] == "1"  # only the loopback interface
        if ok and mode.name == "root-ns":
            ok = words[3] == "0"  # the host's /etc is not in the view
        if ok:
            info = {"mode": mode.name, "uid_drop": mode.drop_uid, "network_namespace": mode.namespaces,
                    "pid_namespace": mode.namespaces, "ipc_namespace": mode.namespaces,
                    "private_root": mode.name == "root-ns",
                    "exposed": list(exposed()[0]) if mode.name == "root-ns" else ["/"],
                    "hidden_inside": list(hidden()) if mode.name == "root-ns" else [],
                    "parent_death": True, **cgroup_report(),
                    "python_guards": True, "rlimits": True}
            if isolate and os.geteuid() == 0 and not mode.drop_uid:
                log.warning("sandbox: running untrusted code as root with only rlimits and Python-level "
                            "guards (no namespaces, interpreter unreachable for an unprivileged uid)")
            return mode, info
        log.debug("sandbox mode %s unavailable: %s %s", mode.name, res.status, res.stderr[-500:])
    raise RuntimeError("sandbox: not even a plain subprocess could be started")
