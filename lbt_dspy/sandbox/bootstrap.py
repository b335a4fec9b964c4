"""The sandbox's child side: what runs inside the sandboxed interpreter before (and around) user code.

The host compiles this file once and runs the code object as ``python -I -S -B -c <loader>
<compiled file> <config literal>`` (see :mod:`lbt_dspy.sandbox.process`), so it may import only the
standard library (and nothing slow to import: no ``json``, whose ``re`` costs milliseconds per
run) and must not import anything from ``lbt_dspy``. Importing it as a module (the host does, for
:func:`encode_value` and :func:`decode_value`) runs nothing.

In the child, :func:`main`:

1. reads the program (and, in *calls* mode, the calls) while the host's files are still visible;
2. under the ``root-ns`` layer (real root in fresh mount/PID/IPC/network namespaces), builds a new
   root filesystem (:func:`build_root`): one size-limited tmpfs holding ``/tmp``, ``/dev/shm`` and
   the work directory, read-only bind mounts of ``/usr`` and the Python installation, a few device
   nodes and a private ``/proc``; nothing else of the host exists in it. It also caps System V and
   POSIX IPC in the new IPC namespace (:func:`cap_ipc`);
3. with namespaces, stays as PID 1 (still root; it runs no user code) and forks the program, so the
   program gets normal signal semantics and everything dies with PID 1, which exits when the
   program does or when the host's lifeline pipe closes (:func:`init_loop`);
4. in the program's process drops to a fresh uid with no groups, ``no_new_privs`` and a
   parent-death signal (:func:`drop_privileges`), installs the Python-level guards
   (:func:`install_guards`), and runs either the program as ``__main__`` or, in calls mode, the
   solution as a module followed by the calls (:func:`run_calls`), whose results leave as lines of
   plain literals on a dedicated pipe (the host parses them with ``ast.literal_eval``).
"""

from __future__ import annotations

import os
import sys

SETUP_FAILED_RC = 121  # exit status when the sandbox could not be set up (no user code ran)
SETUP_FAILED_MSG = b"lbt-sandbox setup failed"

_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REMOUNT = 1, 2, 4, 8, 32
_MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 4096, 8192, 16384, 1 << 18
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_SIGKILL = 9


# --------------------------------------------------------------------------------------------
# Plain data over the wire (child -> host): results of calls, never objects
# --------------------------------------------------------------------------------------------
def encode_value(x, depth: int = 0):
    """A form of `x` made of None, bools, small ints, strs, lists and one-key dicts (so ``repr`` and
    ``ast.literal_eval`` carry it exactly) that keeps Python's types (tuple vs list, sets, bytes...).

    Values of builtin types, subclasses included, are read through the base type's own methods
    (``int.__int__``, ``list.copy``, ``dict.items``...), so an overridden ``__eq__``, ``__iter__`` or
    ``__repr__`` changes nothing; anything else becomes ``{"opaque": ...}`` and fails every check.

    Example:
        >>> decode_value(encode_value((1, [2.5, "x"], {"k": {3}})))
        (1, [2.5, 'x'], {'k': {3}})
    """
    if depth > 200:
        raise RecursionError("value nested too deeply")
    if x is None or x is True or x is False:
        return x
    if isinstance(x, int):
        v = int.__int__(x)
        return v if -(10 ** 15) < v < 10 ** 15 else {"int": hex(v)}
    if isinstance(x, float):
        return {"float": float.hex(float.__float__(x))}
    if isinstance(x, str):
        return str.__str__(x)
    if isinstance(x, complex):
        return {"complex": [float.hex(complex.real.__get__(x)), float.hex(complex.imag.__get__(x))]}
    if isinstance(x, (bytes, bytearray)):  # the buffer, not an overridable method
        return {"bytearray" if isinstance(x, bytearray) else "bytes": memoryview(x).tobytes().hex()}
    if isinstance(x, list):
        return {"list": [encode_value(e, depth + 1) for e in list.copy(x)]}
    if isinstance(x, tuple):
        return {"tuple": [encode_value(e, depth + 1) for e in tuple.__getitem__(x, slice(None))]}
    if isinstance(x, dict):
        return {"dict": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in dict.items(x)]}
    if isinstance(x, frozenset):
        return {"frozenset": [encode_value(e, depth + 1) for e in frozenset.copy(x)]}
    if isinstance(x, set):
        return {"set": [encode_value(e, depth + 1) for e in set.copy(x)]}
    return {"opaque": type.__dict__["__name__"].__get__(type(x))}


class CallFailed:
    """A call that raised, or returned something that is not plain data: it fails every check."""

    def __init__(self, why: str):
        self.why = why

    def __repr__(self) -> str:
        return f"CallFailed({self.why!r})"


def decode_value(v):
    """The inverse of :func:`encode_value` (an ``opaque`` value decodes to :class:`CallFailed`)."""
    if v is None or isinstance(v, (bool, int, str)):
        return v
    if isinstance(v, float):  # not produced by encode_value, accepted for hand-written calls
        return v
    if isinstance(v, list):  # not produced by encode_value: a call's [args, kwargs] pair
        return [decode_value(e) for e in v]
    if not isinstance(v, dict) or len(v) != 1:
        raise ValueError(f"not an encoded value: {v!r:.80}")
    (tag, body), = v.items()
    if tag == "int":
        return int(body, 16)
    if tag == "float":
        return float.fromhex(body)
    if tag == "complex":
        return complex(float.fromhex(body[0]), float.fromhex(body[1]))
    if tag == "bytes":
        return bytes.fromhex(body)
    if tag == "bytearray":
        return bytearray.fromhex(body)
    if tag in ("list", "tuple", "set", "frozenset"):
        items = [decode_value(e) for e in body]
        return {"list": list, "tuple": tuple, "set": set, "frozenset": frozenset}[tag](items)
    if tag == "dict":
        return {decode_value(k): decode_value(e) for k, e in body}
    if tag == "opaque":
        return CallFailed(f"returned a {body}, not plain data")
    raise ValueError(f"unknown tag {tag!r}")


def run_calls(source: str, target: str, calls: list, results_fd: int) -> None:
    """Run `source` as the module ``__solution__``, then call `target` on each ``[args, kwargs]``
    of `calls`, writing one line per call to `results_fd`: ``{'ok': <encoded result>}`` or
    ``{'raised': <exception name>}``. The checks' expected values are never here."""
    write, dumps, enc, name_of = os.write, repr, encode_value, type.__dict__["__name__"].__get__
    ns = {"__name__": "__solution__", "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), ns)  # noqa: S102 - this is the sandbox
    cls_name, _, method = target.rpartition(".")
    for call in calls:
        args, kwargs = decode_value(call)
        try:
            fn = getattr(ns[cls_name](), method) if cls_name else ns[method]
            out = {"ok": enc(fn(*args, **kwargs))}
        except BaseException as exc:  # noqa: BLE001 - SystemExit included: the call did not return
            out = {"raised": name_of(type(exc))}
        data = (dumps(out) + "\n").encode()
        while data:
            data = data[write(results_fd, data):]


# --------------------------------------------------------------------------------------------
# Setup (as root, in fresh namespaces): the new root filesystem and the IPC caps
# --------------------------------------------------------------------------------------------
def _libc():
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)

    def check(ret, what):
        if ret != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), what)

    return libc, check


def build_root(spec: dict) -> None:
    """Replace ``/`` by a fresh tmpfs that shows only what a Python program needs.

    Args:
        spec: ``{"dir": host path of an empty directory, "size_mb": tmpfs size, "ro": [host dirs
            bound read-only at the same path], "hide": [dirs inside those, shown empty],
            "links": [[path, target]], "devices": [paths], "writable": [[path, mode, uid]]}``.
    """
    libc, check = _libc()

    def mount(src, target, fstype, flags, data=None):
        enc = (lambda s: None if s is None else s.encode())
        check(libc.mount(enc(src), enc(target), enc(fstype), flags, enc(data)), target)

    new = spec["dir"]
    mount(None, "/", None, _MS_REC | _MS_PRIVATE)  # nothing below propagates to the host
    mount("lbt-sandbox", new, "tmpfs", _MS_NOSUID | _MS_NODEV,
          f"mode=0755,size={spec['size_mb']}m,nr_inodes=16384")
    for path in spec["ro"]:
        target = new + path
        os.makedirs(target, 0o755, exist_ok=True)
        mount(path, target, None, _MS_BIND)  # not recursive: mounts below `path` stay out
        mount(None, target, None, _MS_REMOUNT | _MS_BIND | _MS_RDONLY | _MS_NOSUID | _MS_NODEV)
    for path in spec.get("hide", ()):  # e.g. site-packages inside the Python installation
        mount("lbt-sandbox-hidden", new + path, "tmpfs", _MS_RDONLY | _MS_NOSUID | _MS_NODEV, "size=4k,mode=0555")
    for path, dest in spec["links"]:
        os.makedirs(os.path.dirname(new + path), 0o755, exist_ok=True)
        os.symlink(dest, new + path)
    for dev in spec["devices"]:
        os.makedirs(os.path.dirname(new + dev), 0o755, exist_ok=True)
        os.close(os.open(new + dev, os.O_CREAT | os.O_WRONLY, 0o666))
        mount(dev, new + dev, None, _MS_BIND)
    for path, mode, uid in spec["writable"]:
        os.makedirs(new + path, 0o755, exist_ok=True)
        os.chmod(new + path, mode)
        if uid is not None:
            os.chown(new + path, uid, uid)
    os.makedirs(new + "/proc", 0o555, exist_ok=True)
    mount("proc", new + "/proc", "proc", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC)  # this PID namespace only
    os.chdir(new)
    mount(new, "/", None, _MS_MOVE)
    os.chroot(".")
    os.chdir("/")


def cap_ipc(values: dict) -> None:
    """Bound System V and POSIX IPC in this (fresh) IPC namespace: ``{"kernel/shmall": N, ...}``."""
    for key, value in values.items():
        with open("/proc/sys/" + key, "w") as fh:
            fh.write(str(value))


def drop_privileges(uid: int) -> None:
    """Become `uid` (no groups, ``no_new_privs``) and die with our parent (the sandbox's init).

    The parent-death signal is set after the uid change: the kernel clears it on a change of
    credentials."""
    libc, check = _libc()
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    check(libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(PR_SET_NO_NEW_PRIVS)")
    check(libc.prctl(_PR_SET_PDEATHSIG, _SIGKILL, 0, 0, 0), "prctl(PR_SET_PDEATHSIG)")
    if {os.getuid(), os.geteuid()} != {uid} or {os.getgid(), os.getegid()} != {uid}:
        raise OSError("could not drop privileges")
    if os.getppid() != 1:  # init died before the death signal was armed
        os._exit(SETUP_FAILED_RC)


def forget_ctypes() -> None:
    for name in [m for m in sys.modules if m in ("ctypes", "_ctypes") or m.startswith("ctypes.")]:
        del sys.modules[name]


def init_loop(child: int, lifeline: int | None, wakeup: int | None) -> None:
    """PID 1 of the sandbox: reap orphans, exit with the program's status (128+N for signal N).

    PID 1 ignores default-action signals (even SIGXCPU), which is why the program is its child.
    Its exit tears down the PID namespace, killing whatever is left. `lifeline` is the read end of
    a pipe whose write end only the host holds: end of file means the host is gone, so we go too
    (this does not rely on any parent-death signal). `wakeup` is where SIGCHLD is signalled."""
    import select

    poller = None
    if lifeline is not None:  # poll, not select: the host's fd numbers may exceed select()'s 1024
        poller = select.poll()
        poller.register(lifeline, select.POLLIN)
        poller.register(wakeup, select.POLLIN)
    while True:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                os._exit(1)
            if pid == 0:
                break
            if pid == child:
                code = os.waitstatus_to_exitcode(status)
                os._exit(code if code >= 0 else 128 - code)
        if lifeline is None:
            os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOWAIT)  # block until a child exits
            continue
        ready = [fd for fd, _ in poller.poll()]
        if lifeline in ready and not os.read(lifeline, 1):
            os._exit(128 + _SIGKILL)
        if wakeup in ready:
            os.read(wakeup, 4096)


# --------------------------------------------------------------------------------------------
# The Python-level guards: accidents and naive attacks only (the kernel layers are the barrier)
# --------------------------------------------------------------------------------------------
def install_guards(work: str) -> None:
    """Refuse, at the Python level: writes/deletes/renames/chmods outside `work`, signals outside
    the sandbox's process group, spawning programs, sockets and ``ctypes``. Code that digs out
    the original functions (e.g. via ``gc``, ``posix``, ``_io``) gets past these."""
    import _io
    import builtins
    import io

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


# --------------------------------------------------------------------------------------------
# Entry point in the child
# --------------------------------------------------------------------------------------------
def setup(cfg: dict) -> tuple[str, dict | None]:
    """Everything before user code; returns (program source, calls spec or None)."""
    with open(cfg["code"], "rb") as fh:  # first: the new root hides this file
        source = fh.read().decode("utf-8", "replace")
    calls = None
    if cfg.get("calls"):  # a literal the host wrote
        with open(cfg["calls"], "rb") as fh:
            calls = eval(fh.read().decode("utf-8"), {"__builtins__": {}})  # noqa: S307
    if cfg.get("root"):
        build_root(cfg["root"])
    if cfg.get("ipc"):
        cap_ipc(cfg["ipc"])
    if cfg["init"]:
        lifeline, wake_r = cfg.get("lifeline"), None
        if lifeline is not None:  # SIGCHLD wakes PID 1's select; armed before the fork, so none is missed
            import _signal as signal  # not `signal`: its enum import costs milliseconds per run
            wake_r, wake_w = os.pipe()
            os.set_blocking(wake_w, False)
            signal.signal(signal.SIGCHLD, lambda *_: None)
            signal.set_wakeup_fd(wake_w)
        child = os.fork()
        if child:
            if cfg.get("results_fd") is not None:
                os.close(cfg["results_fd"])
            init_loop(child, lifeline, wake_r)
        if lifeline is not None:  # the program: ordinary signal handling, none of PID 1's pipes
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            for fd in (lifeline, wake_r, wake_w):
                os.close(fd)
    if cfg.get("uid") is not None:
        drop_privileges(cfg["uid"])
    forget_ctypes()
    os.chdir(cfg["work"])
    if cfg["guards"]:
        install_guards(cfg["work"])
    import builtins
    if not hasattr(builtins, "exit"):  # `site` (skipped by -S) normally provides these
        builtins.exit = builtins.quit = sys.exit
    return source, calls


def main(argv: list[str]) -> None:
    try:
        cfg = eval(argv[-1], {"__builtins__": {}})  # noqa: S307 - a literal the host wrote
        source, calls = setup(cfg)
    except BaseException as exc:  # noqa: BLE001 - report and stop: no user code ran
        os.write(2, SETUP_FAILED_MSG + b": " + repr(exc).encode() + b"\n")
        os._exit(SETUP_FAILED_RC)
    sys.argv = ["main.py"]
    try:
        if calls is not None:
            run_calls(source, calls["target"], calls["calls"], cfg["results_fd"])
            try:
                sys.stdout.flush()
            except BaseException:  # noqa: BLE001 - the solution broke its own stdout
                pass
            os._exit(0)  # no atexit hooks of the solution after the results
        main_globals = {"__name__": "__main__", "__file__": os.path.join(cfg["work"], "main.py"),
                        "__builtins__": __builtins__}
        exec(compile(source, "main.py", "exec"), main_globals)  # noqa: S102 - this is the sandbox
    except SystemExit:
        raise
    except BaseException:  # noqa: BLE001 - the program's own error: print it like Python would
        import traceback
        et, ev, tb = sys.exc_info()
        traceback.print_exception(et, ev, tb.tb_next)  # hide the bootstrap's own frame
        sys.exit(1)


if __name__ == "__main__":
    main(sys.argv)
