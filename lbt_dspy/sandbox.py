"""Run untrusted, model-generated Python code in a locked-down subprocess.

Threat model
------------
The code comes from a language model. It is usually harmless but may be broken in hostile ways
by accident (infinite loops, memory or fork bombs, floods of output, ``sys.exit`` in odd places)
and, rarely, in ways that look deliberate (deleting files, opening network connections, killing
its parent, reading secrets from the environment). Every program therefore runs

* in its own ``python -I -S -B`` subprocess: isolated mode (no ``PYTHON*`` variables, no user
  site, no script or working directory on ``sys.path``) and no ``site`` (no site-packages and no
  ``.pth`` hooks; only the standard library is importable);
* in a new session / process group, killed as a whole with SIGKILL at the wall-clock limit;
* with resource limits set in the child before ``exec`` (``RLIMIT_CPU``, ``RLIMIT_AS``,
  ``RLIMIT_NPROC``, ``RLIMIT_FSIZE``, ``RLIMIT_NOFILE``, ``RLIMIT_CORE=0``);
* in a fresh temporary directory (cwd, ``HOME`` and ``TMPDIR``) that is removed afterwards;
* with a scrubbed environment (only ``PATH``, ``LANG``, ``LC_ALL``, ``HOME``, ``TMPDIR`` and a
  random per-run marker ``LBT_SANDBOX_RUN``), so the host's API keys are never inherited;
* with its output read through a cap (``max_output_bytes`` per stream; the program is killed when
  it writes more).

Layers, strongest first; :func:`isolation` reports which are active on this machine:

1. ``root-ns`` (host runs as root and ``unshare`` works; the case on the project's dev VM):
   ``unshare --mount --net --pid --fork --mount-proc``. Inside, before the user code runs, the
   bootstrap (still root, in the private mount namespace) mounts a size-limited tmpfs as the
   work directory and fresh tmpfs over ``/tmp`` and the other world-writable directories
   (``/var/tmp``, ``/dev/shm``, ``/run/lock``), hides directories an unprivileged user could not
   enter anyway (e.g. ``/root``) except the read-only Python installation inside them, then drops
   to a fresh random uid/gid with no supplementary groups and ``no_new_privs``.
   Kernel-enforced: no network (only a down ``lo``); no signals to host processes (own PID
   namespace, ``/proc`` shows only the sandbox); no writes to the host's files (an unknown uid
   owns nothing, and every writable place is a private tmpfs that vanishes with the run);
   ``RLIMIT_NPROC`` counts only this sandbox; every process dies with the namespace, even those
   that ``setsid()`` away.
2. ``user-ns`` (non-root host with unprivileged user namespaces): ``unshare --user
   --map-current-user --net --pid --fork --mount-proc``. Kernel-enforced: no network, no
   signals to host processes, private ``/proc``, all processes die with the namespace. Files are
   accessed as the host user, so only the in-process guards (below) protect them.
3. ``plain``: no namespaces. A root host still drops to a fresh uid when the interpreter is
   reachable by one (e.g. Docker's ``/usr/local/bin/python``); otherwise only rlimits and the
   guards apply (a warning is logged).

With namespaces the bootstrap stays as PID 1 of the sandbox (which the kernel shields from
default-action signals, SIGXCPU included) and runs the program as its child, so the program has
ordinary signal semantics; the exit status of a program killed by signal N comes back as 128+N
and is reported as that signal (a program that itself exits with 129..192 is reported the same way).

In every mode a Python-level guard installed by the bootstrap refuses: creating sockets (the
``_socket`` module's ``socket``/``socketpair``/address lookups raise ``PermissionError``); opening
files for writing, deleting, renaming or chmod-ing paths outside the work directory; signalling
processes outside the sandbox's process group (``os.kill(-1, ...)`` included); spawning programs
(``subprocess``, ``os.system``, ``os.exec*``, ``os.posix_spawn``); and importing ``ctypes``.
These guards stop accidents and naive attacks only: code that deliberately digs out the original
functions (e.g. through ``gc``) gets past them. The kernel layers are the effective ones.

What the sandbox cannot prevent on this platform
-------------------------------------------------
On this VM (root, util-linux 2.38 ``unshare``, Linux 6.x) the ``root-ns`` layer is active. Left open:

* Reading world-readable files outside the hidden directories (``/etc``, ``/usr``, shared data
  such as ``/work/shared``), and system information in ``/sys`` and ``/proc/mounts``. The
  project checkout, its virtualenv, the host's home and working directory and ``/root`` *are*
  hidden, so the reference answers of the project's datasets are out of reach. Secrets must not
  live in world-readable files.
* Aggregate memory: ``RLIMIT_AS`` is per process, so a program may use up to
  ``max_processes x memory_mb`` plus its tmpfs quotas (work dir, ``/tmp`` and each scratch
  directory: ``max_disk_mb`` each). A cgroup would bound it, but cgroups need root *and* this
  host's cgroups belong to the machinery that runs it, so they are left alone.
* CPU shares: programs compete with the host for the cores (no cgroup); the CPU and wall-clock
  limits still hold. A program that ignores SIGXCPU is SIGKILLed at the hard limit and reported
  as ``killed``, not ``timeout``.
* World-writable directories other than the temp dir and the known scratch ones (none on this
  VM) are not replaced, so files written there would outlive the run (``RLIMIT_FSIZE`` per file).
* Kernel exploits and side channels: this is a namespace + uid boundary, not a VM or gVisor.
* Cheating inside its own process: the Python guards can be dug out (e.g. via ``gc``), and a
  solution can forge its checks' success marker by introspecting the harness's frames or return
  objects whose ``__eq__`` is always true (see :mod:`lbt_dspy.scoring.code`).

Elsewhere the weaker layers leave more open. ``user-ns`` (non-root): the program can write and
delete anything the host user can through means the guards do not cover (``_io.FileIO``,
``posix.unlink``...), and reads everything the host user can, answer keys included. ``plain``:
additionally network access and signals to the host user's processes through such means, no
pid-namespace cleanup (escaped ``setsid`` processes are hunted by the ``LBT_SANDBOX_RUN`` marker,
best effort), and on a root host whose interpreter an unprivileged uid cannot reach, the program
runs as root: the guards are then the only barrier (a warning is logged).

Example:
    >>> r = run_python("print(sum(range(10)))")
    >>> r.status, r.stdout.strip(), r.passed
    ('ok', '45', True)
"""

from __future__ import annotations

import functools
import logging
import math
import os
import resource
import secrets
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "run_many", "isolation"]

log = logging.getLogger(__name__)

SETUP_FAILED_RC = 121  # the bootstrap exits with this before any user code ran
_SETUP_FAILED_MSG = b"lbt-sandbox setup failed"


@dataclass
class SandboxLimits:
    """Resource limits for one sandboxed program.

    Args:
        cpu_seconds: CPU time per process (``RLIMIT_CPU``: SIGXCPU at the limit, SIGKILL 1 s later).
        wall_seconds: Wall-clock time for the whole run; the process group is SIGKILLed after it.
        memory_mb: Address space per process (``RLIMIT_AS``).
        max_processes: Processes/threads the program may have (``RLIMIT_NPROC``).
        max_file_mb: Largest file the program may write (``RLIMIT_FSIZE``).
        max_output_bytes: Bytes kept per output stream; writing more kills the program.
        max_open_files: File descriptors per process (``RLIMIT_NOFILE``).
        max_disk_mb: Size of each tmpfs (work dir, ``/tmp``...) under the ``root-ns`` layer.

    Example:
        >>> SandboxLimits(cpu_seconds=2, wall_seconds=4).memory_mb
        512
    """

    cpu_seconds: float = field(default=5, metadata={"help": "CPU seconds per process (RLIMIT_CPU)"})
    wall_seconds: float = field(default=10, metadata={"help": "wall-clock seconds before the process group is killed"})
    memory_mb: int = field(default=512, metadata={"help": "address space per process in MiB (RLIMIT_AS)"})
    max_processes: int = field(default=32, metadata={"help": "processes/threads the program may run (RLIMIT_NPROC)"})
    max_file_mb: int = field(default=10, metadata={"help": "largest file the program may write, MiB (RLIMIT_FSIZE)"})
    max_output_bytes: int = field(default=1_000_000, metadata={"help": "bytes kept per stream; more kills the program"})
    max_open_files: int = field(default=256, metadata={"help": "open file descriptors per process (RLIMIT_NOFILE)"})
    max_disk_mb: int = field(default=64, metadata={"help": "tmpfs size of the work dir and /tmp (root-ns layer only)"})


@dataclass
class SandboxResult:
    """What happened to one sandboxed program.

    Args:
        status: ``"ok"`` (exit 0), ``"error"`` (non-zero exit), ``"timeout"`` (wall or CPU limit),
            ``"killed"`` (died by a signal), ``"output_limit"`` (wrote more than allowed; killed),
            ``"setup_error"`` (the sandbox itself could not start; no user code ran).
        returncode: Exit code, negative for a signal (``None`` if it never started).
        stdout: Captured standard output (UTF-8, undecodable bytes replaced), at most the cap.
        stderr: Captured standard error, same rules.
        duration: Wall-clock seconds.
        truncated: True when output was cut at ``max_output_bytes``.
        detail: A short human-readable reason for a non-``ok`` status.

    Example:
        >>> SandboxResult("ok", 0, "hi\\n", "", 0.01, False).passed
        True
    """

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    duration: float
    truncated: bool = False
    detail: str = ""

    @property
    def passed(self) -> bool:
        """True when the program ran to completion and exited 0."""
        return self.status == "ok" and self.returncode == 0


# --------------------------------------------------------------------------------------------
# The bootstrap: runs inside the child before the user's code. `_CFG` is prepended per run.
# --------------------------------------------------------------------------------------------
_BOOT = r'''
import sys, os

def _lbt_guards(work):
    import builtins, io

    class Denied(PermissionError):
        pass

    def deny(what, path=None):
        raise Denied(13, "sandbox: " + what + " is not allowed", None if path is None else str(path))

    realpath, join, getcwd, readlink, fsdecode = (
        os.path.realpath, os.path.join, os.getcwd, os.readlink, os.fsdecode)

    def inside(path, dir_fd=None):
        if isinstance(path, int):
            return True  # an already-open descriptor
        p = fsdecode(path)
        base = readlink("/proc/self/fd/%d" % dir_fd) if dir_fd is not None else getcwd()
        full = realpath(join(base, p))
        return full == work or full.startswith(work + "/") or full == "/dev/null"

    real_open = io.open

    def guarded_open(file, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+") and not inside(file):
            deny("writing outside the sandbox directory", file)
        return real_open(file, mode, *args, **kwargs)

    import _io
    builtins.open = io.open = _io.open = guarded_open

    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
    real_os_open = os.open

    def guarded_os_open(path, flags, mode=0o777, *, dir_fd=None):
        if flags & write_flags and not inside(path, dir_fd):
            deny("writing outside the sandbox directory", path)
        return real_os_open(path, flags, mode, dir_fd=dir_fd)

    os.open = guarded_os_open

    def path_guard(name, positions):
        real = getattr(os, name, None)
        if real is None:
            return

        def guarded(*args, **kwargs):
            dir_fd = kwargs.get("dir_fd", kwargs.get("src_dir_fd"))
            for i in positions:
                if i < len(args) and not inside(args[i], dir_fd):
                    deny(name + " outside the sandbox directory", args[i])
            return real(*args, **kwargs)

        setattr(os, name, guarded)

    for name in ("remove", "unlink", "rmdir", "mkdir", "truncate", "chmod", "chown", "lchown",
                 "utime", "mkfifo", "mknod", "chflags", "lchmod", "setxattr", "removexattr"):
        path_guard(name, (0,))
    for name in ("rename", "replace", "link"):
        path_guard(name, (0, 1))
    path_guard("symlink", (1,))

    real_kill, real_killpg, getpgid = os.kill, os.killpg, os.getpgid
    my_group = os.getpgrp()

    def own(pid):
        try:
            return getpgid(pid) == my_group
        except OSError:
            return True  # no such process: let the real call say so

    def guarded_kill(pid, sig):
        if pid == -1 or (pid < -1 and -pid != my_group) or (pid > 0 and not own(pid)):
            deny("signalling processes outside the sandbox")
        return real_kill(pid, sig)

    def guarded_killpg(pgid, sig):
        if pgid not in (0, my_group):
            deny("signalling processes outside the sandbox")
        return real_killpg(pgid, sig)

    os.kill, os.killpg = guarded_kill, guarded_killpg

    def no_spawn(*args, **kwargs):
        deny("starting programs")

    for name in ("system", "execv", "execve", "posix_spawn", "posix_spawnp", "forkpty"):
        if hasattr(os, name):
            setattr(os, name, no_spawn)

    def no_net(*args, **kwargs):
        deny("network access")

    def patch_socket(m):
        class socket(m.socket):
            __slots__ = ()  # socket.socket adds __weakref__ itself

            def __init__(self, *args, **kwargs):
                no_net()
        m.socket = m.SocketType = socket
        for name in ("socketpair", "getaddrinfo", "gethostbyname", "gethostbyname_ex",
                     "gethostbyaddr", "getnameinfo", "dup"):
            if hasattr(m, name):
                setattr(m, name, no_net)

    def patch_spawn(m):
        m.fork_exec = no_spawn

    patches = {"_socket": patch_socket, "_posixsubprocess": patch_spawn}
    blocked = ("_ctypes", "ctypes")

    class Loader:
        def __init__(self, inner, patch):
            self.inner, self.patch = inner, patch

        def create_module(self, spec):
            return self.inner.create_module(spec)

        def exec_module(self, module):
            self.inner.exec_module(module)
            self.patch(module)

    class Guard:
        @classmethod
        def find_spec(cls, name, path=None, target=None):
            if name in blocked:
                raise ImportError(name + " is disabled in the sandbox")
            patch = patches.get(name)
            if patch is None:
                return None
            for finder in sys.meta_path:
                find = getattr(finder, "find_spec", None)
                if finder is cls or find is None:
                    continue
                spec = find(name, path, target)
                if spec is not None:
                    spec.loader = Loader(spec.loader, patch)
                    return spec
            return None

    for name, patch in patches.items():  # already imported by the interpreter itself
        if name in sys.modules:
            patch(sys.modules[name])
    for name in blocked:
        sys.modules.pop(name, None)
    sys.meta_path.insert(0, Guard)


def _lbt_enter(cfg):
    with open(cfg["code"], "rb") as fh:  # first: the mounts below hide this file
        source = fh.read()
    if cfg["mounts"] or cfg["uid"] is not None:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        MS_RDONLY, MS_NOSUID, MS_NODEV, MS_REMOUNT = 1, 2, 4, 32
        MS_BIND, MS_MOVE, MS_REC, MS_PRIVATE = 4096, 8192, 16384, 1 << 18

        def mount(src, target, fstype, flags, data):
            enc = lambda s: None if s is None else s.encode()
            if libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err), target)

        mount(None, "/", None, MS_REC | MS_PRIVATE, None)  # nothing below leaks to the host
        for op in cfg["mounts"]:
            if op[0] == "mkdir":
                os.makedirs(op[1], mode=0o755, exist_ok=True)
            elif op[0] == "tmpfs":
                mount("lbt-sandbox", op[1], "tmpfs", MS_NOSUID | MS_NODEV, op[2])
            elif op[0] == "bind":
                mount(op[1], op[2], None, MS_BIND | MS_REC, None)
                mount(None, op[2], None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV, None)
            elif op[0] == "move":
                mount(op[1], op[2], None, MS_MOVE, None)
        uid = cfg["uid"]
        if uid is not None:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
                raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
            if {os.getuid(), os.geteuid()} != {uid} or {os.getgid(), os.getegid()} != {uid}:
                raise OSError("could not drop privileges")
        del libc, mount
        for name in [m for m in sys.modules if m == "ctypes" or m.startswith("ctypes.") or m == "_ctypes"]:
            del sys.modules[name]
    os.chdir(cfg["work"])
    if cfg["guards"]:
        _lbt_guards(cfg["work"])
    import builtins
    if not hasattr(builtins, "exit"):  # `site` (skipped by -S) normally provides these
        builtins.exit = builtins.quit = sys.exit
    return source


try:
    _lbt_source = _lbt_enter(_CFG)
except BaseException as exc:
    os.write(2, b"lbt-sandbox setup failed: " + repr(exc).encode() + b"\n")
    os._exit(121)

if _CFG["init"]:
    # We are pid 1 of the sandbox's PID namespace, which ignores default-action signals (even
    # SIGXCPU). So the program runs as our child with normal signal semantics; we reap orphans
    # and exit with its status (128+N for signal N). Our exit kills whatever is left.
    _lbt_child = os.fork()
    if _lbt_child:
        while True:
            try:
                _lbt_pid, _lbt_status = os.wait()
            except ChildProcessError:
                os._exit(1)
            if _lbt_pid == _lbt_child:
                _lbt_code = os.waitstatus_to_exitcode(_lbt_status)
                os._exit(_lbt_code if _lbt_code >= 0 else 128 - _lbt_code)

sys.argv = ["main.py"]
_lbt_globals = {"__name__": "__main__", "__file__": os.path.join(_CFG["work"], "main.py"),
                "__builtins__": __builtins__}
del _lbt_enter, _lbt_guards, _CFG
try:
    exec(compile(_lbt_source, "main.py", "exec"), _lbt_globals)
except SystemExit:
    raise
except BaseException:
    import traceback
    _et, _ev, _tb = sys.exc_info()
    traceback.print_exception(_et, _ev, _tb.tb_next)  # hide the bootstrap's own frame
    sys.exit(1)
'''

_PYTHON_FLAGS = ("-I", "-S", "-B")


def _interpreter() -> str:
    # The real binary, not a venv symlink: with -S the venv adds nothing, and under root-ns only
    # the base installation is made reachable for the unprivileged uid.
    return os.path.realpath(sys.executable)


# --------------------------------------------------------------------------------------------
# Isolation modes and the one-time probe that picks the strongest that works here.
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Mode:
    name: str              # "root-ns" | "user-ns" | "plain"
    prefix: tuple = ()     # the unshare command line, if any
    drop_uid: bool = False  # run as a fresh unprivileged uid
    drop_in_child: bool = False  # the bootstrap (not Popen) drops privileges, after mounting
    namespaces: bool = False


_UNSHARE_COMMON = ("--net", "--pid", "--fork", "--kill-child", "--mount-proc")


def _candidate_modes() -> list[_Mode]:
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    modes = []
    if os.geteuid() == 0:
        if unshare:
            modes.append(_Mode("root-ns", (unshare, "--mount", *_UNSHARE_COMMON), True, True, True))
            userns = (unshare, "--user", "--map-current-user", *_UNSHARE_COMMON)
            modes.append(_Mode("user-ns", userns, True, False, True))
        modes.append(_Mode("plain", (), True))
    elif unshare:
        for mapping in ("--map-current-user", "--map-root-user"):  # the first needs util-linux >= 2.38
            modes.append(_Mode("user-ns", (unshare, "--user", mapping, *_UNSHARE_COMMON), False, False, True))
    modes.append(_Mode("plain"))
    return modes


def _blocked_dirs(paths: list[str]) -> dict[str, list[str]]:
    """For each path the sandboxed uid must reach, the topmost ancestor it cannot search -> the
    paths under it to keep visible (read-only) when that ancestor is hidden under root-ns."""
    hide: dict[str, list[str]] = {}
    for path in paths:
        parts = path.strip("/").split("/")
        for i in range(1, len(parts)):
            anc = "/" + "/".join(parts[:i])
            try:
                mode = os.stat(anc).st_mode
            except OSError:
                break
            if not mode & stat.S_IXOTH:
                hide.setdefault(anc, [])
                if path not in hide[anc]:
                    hide[anc].append(path)
                break
    return hide


def _python_paths() -> list[str]:
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix),
             os.path.dirname(_interpreter())}
    # drop paths nested in others, keep the outermost
    return sorted(p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths))


@functools.lru_cache(maxsize=1)
def _static_hidden() -> tuple[str, ...]:
    """Directories with the project's code and data (answer keys!), hidden under root-ns."""
    dirs = [os.path.dirname(os.path.dirname(os.path.abspath(__file__))),  # the project checkout
            sys.prefix, os.path.expanduser("~")]
    return tuple(dirs)


def _hidden_dirs() -> dict[str, list[str]]:
    """Directories replaced by an empty tmpfs under root-ns -> Python paths kept inside them.

    These are the ancestors of the interpreter that an unprivileged uid cannot enter (e.g.
    ``/root``), and the directories holding the project, its virtualenv, the host's home and
    working directory (so that a program cannot read the datasets' reference answers). Never
    ``/``, the temp dir's ancestors, or anything inside the temp dir (replaced anyway)."""
    py = _python_paths()
    tmp = os.path.realpath(tempfile.gettempdir())
    hidden = dict(_blocked_dirs(py))
    for d in (*_static_hidden(), os.getcwd()):
        d = os.path.realpath(d)
        if d == "/" or not os.path.isdir(d) or d == tmp or tmp.startswith(d + "/") or d.startswith(tmp + "/"):
            continue
        hidden.setdefault(d, [p for p in py if p == d or p.startswith(d + "/")])
    hidden = {d: keep for d, keep in hidden.items() if d not in keep}  # never hide Python itself
    outer = sorted(hidden, key=len)
    return {d: hidden[d] for d in outer if not any(d.startswith(o + "/") for o in outer)}


@functools.lru_cache(maxsize=1)
def _scratch_dirs() -> tuple[str, ...]:
    """World-writable directories (besides the temp dir) that get a private tmpfs under root-ns,
    so that nothing the program writes outlives it."""
    found = []
    for d in ("/var/tmp", "/dev/shm", "/run/lock", "/var/lock", "/dev/mqueue", "/run/shm"):
        try:
            st = os.lstat(d)
        except OSError:
            continue
        if stat.S_ISDIR(st.st_mode) and st.st_mode & stat.S_IWOTH:
            found.append(d)
    return tuple(found)


def _mount_plan(work: str, uid: int, limits: SandboxLimits, stage_base: str) -> list:
    """The bootstrap's mount operations for root-ns (executed as root in the new mount namespace)."""
    disk = f"size={max(1, int(limits.max_disk_mb))}m"
    ops: list = []
    n = 0

    def hide(directory: str, keep_ro: list[str], work_inside: bool, options: str):
        # Build the replacement tmpfs on a stage, then move it over `directory` in one step.
        nonlocal n
        stage = os.path.join(stage_base, f"stage{n}")
        n += 1
        ops.extend([("mkdir", stage), ("tmpfs", stage, options)])
        for keep in keep_ro:
            target = os.path.join(stage, os.path.relpath(keep, directory))
            ops.extend([("mkdir", target), ("bind", keep, target)])
        if work_inside:
            target = os.path.join(stage, os.path.relpath(work, directory))
            ops.extend([("mkdir", target), ("tmpfs", target, f"mode=0700,uid={uid},gid={uid},{disk}")])
        ops.append(("move", stage, directory))

    # Hidden private directories first: the stages live under the run's base dir, which the
    # /tmp replacement below makes unreachable.
    for directory, keep in _hidden_dirs().items():
        hide(directory, keep, False, "mode=0755,size=1m")
    for d in _scratch_dirs():
        if not work.startswith(d + "/"):
            ops.append(("tmpfs", d, f"mode=1777,{disk}"))
    tmp = os.path.realpath(tempfile.gettempdir())
    if work.startswith(tmp + "/") and tmp not in ("/", ""):
        hide(tmp, [], True, f"mode=1777,{disk}")
    else:
        ops.append(("tmpfs", work, f"mode=0700,uid={uid},gid={uid},{disk}"))
    return ops


_probe_lock = threading.Lock()
_probed: dict[bool, tuple[_Mode, dict]] = {}


def _select_mode(isolate: bool) -> _Mode:
    with _probe_lock:
        if isolate not in _probed:
            _probed[isolate] = _probe(isolate)
        return _probed[isolate][0]


def isolation(isolate: bool = True) -> dict:
    """Which protection layers are active for sandboxed runs on this machine (probed once).

    Args:
        isolate: The ``isolate`` argument of :func:`run_python`.

    Returns:
        ``{"mode": ..., "uid_drop": bool, "network_namespace": bool, "pid_namespace": bool,
        "private_tmp": bool, "hidden_dirs": [...], "python_guards": True, "rlimits": True}``
        (``hidden_dirs`` as at the probe; the host's working directory is added per run).

    Example:
        >>> isolation()["python_guards"]
        True
    """
    _select_mode(isolate)
    return dict(_probed[isolate][1])


_PROBE = "import os\nprint('lbt-probe', os.getuid(), open('/proc/self/net/dev').read().count(':'))\n"


def _probe(isolate: bool) -> tuple[_Mode, dict]:
    modes = _candidate_modes() if isolate else [_Mode("plain")]
    for mode in modes:
        res, uid = _run(_PROBE, SandboxLimits(wall_seconds=20), "", mode)
        words = res.stdout.split()
        ok = res.passed and len(words) == 3 and words[0] == "lbt-probe"
        if ok and mode.drop_uid:
            ok = words[1] == str(uid)
        if ok and mode.namespaces:
            ok = words[2] == "1"  # only the loopback interface
        if ok:
            info = {"mode": mode.name, "uid_drop": mode.drop_uid, "network_namespace": mode.namespaces,
                    "pid_namespace": mode.namespaces, "private_tmp": mode.name == "root-ns",
                    "hidden_dirs": sorted(_hidden_dirs()) if mode.name == "root-ns" else [],
                    "python_guards": True, "rlimits": True}
            if isolate and os.geteuid() == 0 and not mode.drop_uid:
                log.warning("sandbox: running untrusted code as root with only rlimits and Python-level "
                            "guards (no namespaces, interpreter unreachable for an unprivileged uid)")
            return mode, info
        log.debug("sandbox mode %s unavailable: %s %s", mode.name, res.status, res.stderr[-500:])
    raise RuntimeError("sandbox: not even a plain subprocess could be started")


# --------------------------------------------------------------------------------------------
# One run.
# --------------------------------------------------------------------------------------------
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


def _set_rlimits(values: tuple) -> None:
    # Runs in the forked child before exec: keep it to plain system calls.
    for which, value in values:
        resource.setrlimit(which, value)


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


def _read_output(proc: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str]:
    """Read stdout/stderr until EOF, the deadline, or the cap. Returns (stdout, stderr, reason)."""
    out, err = bytearray(), bytearray()
    bufs = {proc.stdout.fileno(): out, proc.stderr.fileno(): err}
    sel = selectors.DefaultSelector()
    for fd in bufs:
        sel.register(fd, selectors.EVENT_READ)
    reason, exited_at = "", None
    try:
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                reason = "timeout"
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
    return bytes(out), bytes(err), reason


def _rmtree(path: str) -> None:
    def fix(func, p, _exc):  # the program may have chmod-ed its own dirs to 000
        try:
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)
        except OSError:
            pass

    shutil.rmtree(path, onerror=fix)


def _run(code: str, limits: SandboxLimits, stdin: str, mode: _Mode) -> tuple[SandboxResult, int | None]:
    start = time.monotonic()
    base = os.path.realpath(tempfile.mkdtemp(prefix="lbt-sandbox-"))
    try:
        os.chmod(base, 0o711)  # the sandbox uid may traverse to its work dir, not list the base
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        code_path = os.path.join(work, "main.py")
        with open(code_path, "w", encoding="utf-8", errors="replace") as fh:  # lone surrogates
            fh.write(code)
        uid = _fresh_uid() if mode.drop_uid else None
        popen_ids: dict = {}
        if uid is not None and not mode.drop_in_child:
            os.chown(work, uid, uid)
            popen_ids = {"user": uid, "group": uid, "extra_groups": []}
        if uid is not None:
            nproc = limits.max_processes + (2 if mode.prefix else 0)  # + unshare and our init
        else:  # RLIMIT_NPROC counts all processes of the host user
            nproc = _user_process_count(os.getuid()) + limits.max_processes + 2
        token = secrets.token_hex(8)
        cfg = {"code": code_path, "work": work, "guards": True, "init": mode.namespaces,
               "uid": uid if mode.drop_in_child else None,
               "mounts": _mount_plan(work, uid, limits, base) if mode.name == "root-ns" else []}
        argv = [*mode.prefix, *(["--"] if mode.prefix else []), _interpreter(), *_PYTHON_FLAGS,
                "-c", f"_CFG = {cfg!r}\n{_BOOT}"]
        env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
               "HOME": work, "TMPDIR": work, "LBT_SANDBOX_RUN": token}
        stdin_file = None
        if stdin:
            stdin_path = os.path.join(base, "stdin")
            with open(stdin_path, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(stdin)
            stdin_file = open(stdin_path, "rb")
        try:
            proc = subprocess.Popen(
                argv, stdin=stdin_file or subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                cwd=work, env=env, close_fds=True, start_new_session=True,
                preexec_fn=functools.partial(_set_rlimits, _rlimits(limits, nproc)), **popen_ids)
        except (OSError, subprocess.SubprocessError) as exc:
            return SandboxResult("setup_error", None, "", str(exc), time.monotonic() - start, False,
                                 f"could not start the sandbox: {exc}"), uid
        finally:
            if stdin_file:
                stdin_file.close()
        with proc:
            out, err, reason = _read_output(proc, start + limits.wall_seconds, limits.max_output_bytes)
            _killpg(proc.pid)
            returncode = proc.wait()
        if mode.namespaces and 128 < returncode <= 128 + 64 and not reason:
            returncode = 128 - returncode  # our init's encoding of "killed by signal N"
        if mode.name == "plain":
            _kill_stragglers(uid, token)
    finally:
        _rmtree(base)
    return _result(reason, returncode, out, err, time.monotonic() - start, limits), uid


def _result(reason: str, rc: int, out: bytes, err: bytes, duration: float, limits: SandboxLimits) -> SandboxResult:
    cap = limits.max_output_bytes
    truncated = reason == "output_limit"
    if reason == "output_limit":
        status, detail = "output_limit", f"wrote more than {cap} bytes to a stream; killed"
    elif reason == "timeout":
        status, detail = "timeout", f"wall-clock limit of {limits.wall_seconds}s exceeded; killed"
    elif rc == SETUP_FAILED_RC and err.startswith(_SETUP_FAILED_MSG):
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
    dec = lambda b: b.decode("utf-8", "replace")
    return SandboxResult(status, rc, dec(out), dec(err), duration, truncated, detail)


def run_python(code: str, limits: SandboxLimits | None = None, stdin: str = "", *,
               isolate: bool = True) -> SandboxResult:
    """Run `code` as the main program of a fresh sandboxed Python process.

    Args:
        code: Python source to run (as ``__main__``).
        limits: Resource limits; defaults to :class:`SandboxLimits`.
        stdin: Text fed to the program's standard input.
        isolate: Use the kernel layers (namespaces, uid drop) where available. ``False`` leaves
            only rlimits and the Python-level guards, for testing those guards (as root this
            means no process limit either: ``RLIMIT_NPROC`` does not bind root).

    Returns:
        A :class:`SandboxResult`; never raises for anything the program does.

    Example:
        >>> run_python("import sys; print(sys.stdin.read().upper())", stdin="hi").stdout
        'HI\\n'
    """
    mode = _select_mode(isolate)
    return _run(code, limits or SandboxLimits(), stdin, mode)[0]


def run_many(codes, limits: SandboxLimits | None = None, max_workers: int | None = None,
             stdin: str = "", *, isolate: bool = True) -> list[SandboxResult]:
    """Run several programs in parallel (each in its own sandbox), results in input order.

    Args:
        codes: Iterable of Python sources.
        limits: Limits for every program.
        max_workers: Programs run at once; defaults to the number of CPU cores.
        stdin: Standard input for every program.
        isolate: As in :func:`run_python`.

    Example:
        >>> [r.stdout for r in run_many(["print(1)", "print(2)"])]
        ['1\\n', '2\\n']
    """
    codes = list(codes)
    if not codes:
        return []
    _select_mode(isolate)  # probe once, before the threads race for it
    workers = max(1, min(max_workers or os.cpu_count() or 1, len(codes)))
    if workers == 1:
        return [run_python(c, limits, stdin, isolate=isolate) for c in codes]
    with ThreadPoolExecutor(workers, thread_name_prefix="lbt-sandbox") as pool:
        return list(pool.map(lambda c: run_python(c, limits, stdin, isolate=isolate), codes))
