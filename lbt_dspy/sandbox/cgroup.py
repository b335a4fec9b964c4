"""One memory cgroup per sandboxed run: the memory of the program and all its descendants, together.

``RLIMIT_AS`` bounds one process; a program that forks N children could otherwise hold
N x ``memory_mb``. Where this host can make a memory cgroup (root, or a delegated cgroup v2 subtree),
:meth:`MemoryCgroup.create` makes a fresh one per run with the limit
:attr:`~lbt_dspy.sandbox.SandboxLimits.total_memory_mb` (swap off where the kernel lets us), the
sandbox's first process joins it before it executes anything (so every descendant is in it), the
host watches its OOM-kill counter, and :meth:`MemoryCgroup.remove` kills what is left in it and
removes it. Where none can be made, runs fall back silently to the per-process ``RLIMIT_AS``, and
:func:`report` says why (``isolation()["cgroup_memory"]``). A place is used only once a throwaway
child has joined a cgroup made there (:meth:`MemoryCgroup.join_works`).

Where the cgroup is made, first that works (checked on the first run, remembered):

- cgroup v1 (a ``cgroup`` mount with the ``memory`` controller): under this process's own memory
  cgroup, else under the hierarchy's root; ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``
  (the latter only with swap accounting), ``memory.swappiness`` 0, OOM kills counted in ``memory.oom_control``;
- cgroup v2 (a ``cgroup2`` mount whose ``cgroup.controllers`` has ``memory``): under this process's own
  cgroup where memory is already enabled for its children (e.g. the root: a non-root cgroup that holds
  processes cannot enable it), else its parent (a sibling: the usual delegated case), else the root;
  ``memory.max``, ``memory.swap.max`` 0, ``memory.oom.group`` 1 (an OOM kill takes the whole run),
  OOM kills counted in ``memory.events``. lbt never enables controllers itself.

``LBT_SANDBOX_CGROUP=0`` in the host's environment turns it off (e.g. where the memory hierarchy
belongs to someone else). Names are ``lbt-sandbox-<pid namespace>-<host pid>-<random>``: empty ones
left by a host of the same PID namespace that died mid-run (SIGKILL) are removed by any other host
(when it makes a cgroup, at most every 5 s, and when it exits).
"""

from __future__ import annotations

import atexit
import errno
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

PREFIX = "lbt-sandbox-"
ENV_SWITCH = "LBT_SANDBOX_CGROUP"

_lock = threading.Lock()
_chosen: tuple[int, str] | None = None  # (version, parent directory) that worked
_disabled = ""  # why no cgroup is used ("" = not decided yet, or in use)
_live: set[MemoryCgroup] = set()
_swept = -1e9  # when leftovers of dead hosts were last looked for


def _pidns() -> int:
    try:
        return os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return 0


def _unescape(field: str) -> str:  # mountinfo escapes space, tab, newline and backslash as \ooo
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and field[i + 1:i + 4].isdigit() and len(field[i + 1:i + 4]) == 3:
            out.append(chr(int(field[i + 1:i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _read(path: str) -> str:
    with open(path) as fh:
        return fh.read()


def _write(path: str, value) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, str(value).encode())
    finally:
        os.close(fd)


def _inside(mount: str, root: str, own: str | None) -> str | None:
    """The directory of cgroup `own` (a path from /proc/self/cgroup) in a mount of `root` at `mount`."""
    if own is None:
        return None
    if root == "/":
        rel = own
    elif own == root or own.startswith(root + "/"):
        rel = own[len(root):]
    else:
        return None
    path = os.path.normpath(mount + "/" + rel.lstrip("/"))
    return path if os.path.isdir(path) else None


def candidates(proc_cgroup: str | None = None, mountinfo: str | None = None) -> tuple[list[tuple[int, str]], str]:
    """Where a run's cgroup could be made, best first, as (cgroup version, parent directory); and
    when there is nowhere, why. The arguments stand in for ``/proc/self/cgroup`` and ``/proc/self/mountinfo``."""
    own_v1 = own_v2 = None
    try:
        for line in (proc_cgroup if proc_cgroup is not None else _read("/proc/self/cgroup")).splitlines():
            hid, ctrls, path = line.split(":", 2)
            if hid == "0" and not ctrls:
                own_v2 = path
            elif "memory" in ctrls.split(","):
                own_v1 = path
        mounts = (mountinfo if mountinfo is not None else _read("/proc/self/mountinfo")).splitlines()
    except (OSError, ValueError) as exc:
        return [], f"cannot read this process's cgroups ({exc})"
    out, seen_v2 = [], []
    for line in mounts:
        parts = line.split()
        try:
            sep = parts.index("-")
            fstype, superopts = parts[sep + 1], parts[sep + 3]
        except (ValueError, IndexError):
            continue
        root, mount = _unescape(parts[3]), _unescape(parts[4])
        if fstype == "cgroup" and "memory" in superopts.split(","):
            dirs = [_inside(mount, root, own_v1), mount]
            out += [(1, d) for d in dirs if d]
        elif fstype == "cgroup2":
            try:
                controllers = _read(os.path.join(mount, "cgroup.controllers")).split()
            except OSError:
                continue
            if "memory" not in controllers:
                seen_v2.append(f"cgroup v2 at {mount} has no memory controller ({' '.join(controllers) or 'none'})")
                continue
            own = _inside(mount, root, own_v2)
            dirs = [own, os.path.dirname(own) if own and own != mount else None, mount]
            out += [(2, d) for d in dirs if d]
    unique = []
    for c in out:
        if c not in unique:
            unique.append(c)
    if unique:
        return unique, ""
    return [], "; ".join(seen_v2) or "no memory cgroup hierarchy mounted"


class MemoryCgroup:
    """A fresh memory cgroup of one run (see the module's docstring).

    Example:
        >>> cg = MemoryCgroup.create(256 * 2 ** 20)  # None where no cgroup can be made
        >>> if cg is not None:
        ...     cg.remove()
    """

    def __init__(self, version: int, path: str, limit: int):
        self.version, self.path, self.limit = version, path, limit
        self.procs = os.path.join(path, "cgroup.procs")  # the child writes its pid here before exec

    # -- creation -------------------------------------------------------------------------------
    @classmethod
    def create(cls, limit: int) -> MemoryCgroup | None:
        """A new cgroup bounding its members' memory (RAM, tmpfs, kernel memory) to `limit` bytes
        together; None where none can be made here (see :func:`report`)."""
        global _chosen, _swept
        if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "no", "false"):
            return None
        with _lock:
            if _disabled:
                return None
            places = [_chosen] if _chosen else None
            sweep = time.monotonic() - _swept > 5
            if sweep:
                _swept = time.monotonic()
        if places is None:
            places, why = candidates()
            if not places:
                disable(why)
                return None
        if sweep:
            _sweep(places)
        errors = []
        for version, parent in places:
            try:
                cg = cls._make(version, parent, limit)
            except OSError as exc:
                errors.append(f"v{version} {parent}: {exc.strerror or exc}")
                continue
            if _chosen is None and not cg.join_works():  # a new place: can a process of ours get in?
                cg.remove()
                errors.append(f"v{version} {parent}: a process cannot join a cgroup made there")
                continue
            with _lock:
                _chosen = _chosen or (version, parent)
                _live.add(cg)
            return cg
        if _chosen is None:
            disable("cannot make a memory cgroup (" + "; ".join(errors) + ")")
        else:  # worked before: a passing problem (e.g. out of cgroup ids); this run goes without
            log.warning("sandbox: no memory cgroup for this run (%s); RLIMIT_AS only", "; ".join(errors))
        return None

    @classmethod
    def _make(cls, version: int, parent: str, limit: int) -> MemoryCgroup:
        path = os.path.join(parent, f"{PREFIX}{_pidns()}-{os.getpid()}-{secrets.token_hex(6)}")
        os.mkdir(path, 0o755)
        try:
            if version == 1:
                _write(os.path.join(path, "memory.limit_in_bytes"), limit)
                _try_write(os.path.join(path, "memory.memsw.limit_in_bytes"), limit)  # needs swap accounting
                _try_write(os.path.join(path, "memory.swappiness"), 0)
            else:
                limit_file = os.path.join(path, "memory.max")
                if not os.path.exists(limit_file):  # not enabling it ourselves: that changes the host's tree
                    raise OSError(errno.ENOTSUP, "memory controller not enabled for its children")
                _write(limit_file, limit)
                _try_write(os.path.join(path, "memory.swap.max"), 0)
                _try_write(os.path.join(path, "memory.oom.group"), 1)  # an OOM kill takes the whole run
            if os.geteuid() != 0:  # a delegated subtree: may we move our processes in at all? (v2
                # also asks for the common ancestor's cgroup.procs; a failure at the start is caught too)
                for procs in [os.path.join(path, "cgroup.procs")] + ([os.path.join(parent, "cgroup.procs")]
                                                                      if version == 2 else []):
                    if not os.access(procs, os.W_OK):
                        raise OSError(errno.EACCES, f"{procs} not writable")
        except BaseException:
            _rmdir(path)
            raise
        return cls(version, path, limit)

    # -- during the run -------------------------------------------------------------------------
    def oom_kills(self) -> int:
        """Processes the kernel killed in this cgroup for want of memory (so far)."""
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        try:
            fields = dict(line.split() for line in _read(os.path.join(self.path, name)).splitlines())
        except (OSError, ValueError):
            return 0
        if "oom_kill" in fields:
            return int(fields["oom_kill"])
        return int(fields.get("under_oom", fields.get("oom", 0)))  # kernels before 4.13

    def join_works(self) -> bool:
        """Can a child of this host join the cgroup before its exec, as the sandbox's does? (Tried
        with a throwaway ``true``.)"""
        procs = self.procs

        def join():
            fd = os.open(procs, os.O_WRONLY)
            try:
                os.write(fd, b"%d" % os.getpid())
            finally:
                os.close(fd)

        argv = ["/bin/true"] if os.path.exists("/bin/true") else [sys.executable, "-S", "-c", ""]
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=subprocess.DEVNULL, close_fds=True, preexec_fn=join)
        except (OSError, subprocess.SubprocessError):
            return False
        proc.wait()
        return True

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in _read(self.procs).split()]
        except (OSError, ValueError):
            return []

    # -- after it -------------------------------------------------------------------------------
    def kill(self) -> None:
        """SIGKILL every process left in the cgroup (pid reuse cannot redirect it: pidfds)."""
        kill_file = os.path.join(self.path, "cgroup.kill")
        if self.version == 2 and os.path.exists(kill_file):
            _try_write(kill_file, 1)
        for _ in range(200):
            pids = self.pids()
            if not pids:
                return
            handles = {}
            for pid in pids:
                try:
                    handles[pid] = os.pidfd_open(pid)
                except (OSError, AttributeError):
                    pass
            try:
                still = set(self.pids())  # opened after it was listed and still listed: it is ours
                for pid, fd in handles.items():
                    if pid in still:
                        try:
                            signal.pidfd_send_signal(fd, signal.SIGKILL)
                        except OSError:
                            pass
            finally:
                for fd in handles.values():
                    os.close(fd)
            time.sleep(0.005)
        log.warning("sandbox: processes left in %s after 200 rounds of SIGKILL", self.path)

    def remove(self) -> None:
        """Kill what is left in the cgroup and remove it (idempotent; never raises)."""
        try:
            self.kill()
            _rmdir(self.path, patient=True)
        except Exception as exc:  # noqa: BLE001 - clean-up must not hide the run's own outcome
            log.warning("sandbox: could not remove cgroup %s: %s", self.path, exc)
        finally:
            with _lock:
                _live.discard(self)

    def __enter__(self) -> MemoryCgroup:
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _try_write(path: str, value) -> bool:
    try:
        _write(path, value)
        return True
    except OSError:
        return False


def _rmdir(path: str, patient: bool = False) -> None:
    deadline = time.monotonic() + (3.0 if patient else 0)
    while True:
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as exc:  # EBUSY: a process still exiting
            if time.monotonic() >= deadline:
                raise OSError(exc.errno, f"could not remove {path}: {exc.strerror}") from None
            time.sleep(0.01)


def _sweep(places: list[tuple[int, str]]) -> None:
    """Remove empty run cgroups of dead hosts of this PID namespace (a host SIGKILLed mid-run)."""
    mine = f"{PREFIX}{_pidns()}-"
    for _, parent in places:
        try:
            names = [n for n in os.listdir(parent) if n.startswith(mine)]
        except OSError:
            continue
        for name in names:
            try:
                pid = int(name[len(mine):].split("-")[0])
                os.kill(pid, 0)
                continue  # its host lives
            except ValueError:
                continue
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
            try:
                os.rmdir(os.path.join(parent, name))  # fails (EBUSY) where processes remain: left alone
            except OSError:
                pass


def disable(reason: str) -> None:
    """Use no cgroups from now on in this process (runs keep ``RLIMIT_AS``); `reason` goes in :func:`report`."""
    global _disabled
    with _lock:
        if not _disabled:
            _disabled = reason
            log.info("sandbox: total memory not bounded by a cgroup: %s", reason)


def report() -> dict:
    """``{"total_memory_cgroup": bool, "cgroup_memory": what is used, or why none}`` (as of now)."""
    if os.environ.get(ENV_SWITCH, "1").strip().lower() in ("0", "off", "no", "false"):
        why = f"turned off by {ENV_SWITCH}"
    else:
        with _lock:
            chosen, why = _chosen, _disabled
        if chosen and not why:
            version, parent = chosen
            knob = "memory.limit_in_bytes" if version == 1 else "memory.max"
            return {"total_memory_cgroup": True,
                    "cgroup_memory": f"cgroup v{version}: one cgroup per run under {parent} ({knob} = total_memory_mb)"}
        why = why or "not tried yet (no sandboxed run so far)"
    return {"total_memory_cgroup": False,
            "cgroup_memory": f"no cgroup: {why}; memory is bounded per process only (RLIMIT_AS)"}


def parent_dir() -> str | None:
    """The directory run cgroups are made in here (None where none are)."""
    with _lock:
        return _chosen[1] if _chosen and not _disabled else None


def _remove_live() -> None:
    with _lock:
        left, chosen = list(_live), _chosen
    for cg in left:
        cg.remove()
    if chosen:
        _sweep([chosen])


atexit.register(_remove_live)
