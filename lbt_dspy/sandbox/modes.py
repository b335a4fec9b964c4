"""Isolation layers: which one this machine offers (probed once), and the filesystem view of ``root-ns``."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import stat
import sys
import sysconfig
from dataclasses import dataclass


PYTHON_FLAGS = ("-I", "-S", "-B")
WORK_DIR = "/sandbox"  # the program's cwd and HOME inside the root-ns view
# Fresh namespaces for everything but users: no network, no host pids, private System V/POSIX IPC.
_UNSHARE_COMMON = ("--net", "--pid", "--ipc", "--fork", "--kill-child", "--mount-proc")
_DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
_DEV_LINKS = (("/dev/fd", "/proc/self/fd"), ("/dev/stdin", "/proc/self/fd/0"),
              ("/dev/stdout", "/proc/self/fd/1"), ("/dev/stderr", "/proc/self/fd/2"))


def interpreter() -> str:
    """The real Python binary, not a venv symlink: with ``-S`` the venv adds nothing, and only the
    base installation is visible inside the sandbox."""
    return os.path.realpath(sys.executable)


@dataclass(frozen=True)
class Mode:
    """One isolation layer: how the child is started and what the bootstrap does."""

    name: str              # "root-ns" | "user-ns" | "plain"
    prefix: tuple = ()     # the unshare command line, if any
    drop_uid: bool = False  # run as a fresh unprivileged uid
    drop_in_child: bool = False  # the bootstrap (not Popen) drops privileges, after building the root
    namespaces: bool = False


def candidate_modes() -> list[Mode]:
    unshare = shutil.which("unshare", path="/usr/bin:/bin:/usr/sbin:/sbin")
    modes = []
    if os.geteuid() == 0:
        if unshare:
            modes.append(Mode("root-ns", (unshare, "--mount", *_UNSHARE_COMMON), True, True, True))
            modes.append(Mode("user-ns", (unshare, "--user", "--map-current-user", *_UNSHARE_COMMON),
                              True, False, True))
        modes.append(Mode("plain", (), True))
    elif unshare:
        for mapping in ("--map-current-user", "--map-root-user"):  # the first needs util-linux >= 2.38
            modes.append(Mode("user-ns", (unshare, "--user", mapping, *_UNSHARE_COMMON), False, False, True))
    modes.append(Mode("plain"))
    return modes


# --------------------------------------------------------------------------------------------
# The root-ns filesystem view: a fresh tmpfs root with /usr and Python bound read-only
# --------------------------------------------------------------------------------------------
def _python_paths() -> list[str]:
    paths = {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix),
             os.path.dirname(interpreter())}
    return sorted(p for p in paths if not any(p != q and p.startswith(q + "/") for q in paths))


@functools.lru_cache(maxsize=1)
def exposed() -> tuple[tuple[str, ...], tuple[tuple[str, str], ...]]:
    """(host directories bound read-only into the view, top-level symlinks recreated in it).

    ``/usr`` (libraries), the top-level library/binary directories that are not symlinks into it,
    and the Python installation; nothing else of the host."""
    ro, links = ["/usr"], []
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        try:
            st = os.lstat(top)
        except OSError:
            continue
        if stat.S_ISLNK(st.st_mode):
            links.append((top, os.readlink(top)))
        elif stat.S_ISDIR(st.st_mode):
            ro.append(top)
    for p in _python_paths():
        if not any(p == d or p.startswith(d + "/") for d in ro):
            ro.append(p)
    return tuple(ro), tuple(links)


@functools.lru_cache(maxsize=1)
def hidden() -> tuple[str, ...]:
    """Directories inside the exposed trees that the view shows empty: installed packages (the
    program gets only the standard library anyway, and packages may hold data such as answer keys)."""
    ro = exposed()[0]
    base = {"base": sys.base_prefix, "platbase": sys.base_exec_prefix}
    cands = {sysconfig.get_paths(vars=base)[k] for k in ("purelib", "platlib")}
    for pattern in ("/usr/lib/python3*/site-packages", "/usr/lib/python3*/dist-packages", "/usr/lib/python3/dist-packages",
                    "/usr/local/lib/python3*/site-packages", "/usr/local/lib/python3*/dist-packages"):
        cands.update(glob.glob(pattern))
    out = set()
    for c in cands:
        c = os.path.realpath(c)
        if os.path.isdir(c) and any(c.startswith(d + "/") for d in ro):
            out.add(c)
    return tuple(sorted(out))


def root_spec(new_root: str, uid: int, disk_mb: int) -> dict:
    """The bootstrap's :func:`~lbt_dspy.sandbox.bootstrap.build_root` plan."""
    ro, links = exposed()
    return {"dir": new_root, "size_mb": max(1, int(disk_mb)), "ro": list(ro), "hide": list(hidden()),
            "links": [list(x) for x in links + _DEV_LINKS],
            "devices": [d for d in _DEVICES if os.path.exists(d)],
            "writable": [["/tmp", 0o1777, None], ["/dev/shm", 0o1777, None], [WORK_DIR, 0o700, uid]]}


def ipc_caps(disk_mb: int) -> dict:
    """Per-IPC-namespace limits: System V shared memory within the disk budget, few queues and sets."""
    shm = max(1, int(disk_mb)) * 1024 * 1024
    return {"kernel/shmmax": shm, "kernel/shmall": shm // 4096, "kernel/shmmni": 8,
            "kernel/msgmni": 8, "kernel/msgmnb": 65536, "kernel/msgmax": 8192, "kernel/sem": "32 256 32 8",
            "fs/mqueue/queues_max": 8, "fs/mqueue/msg_max": 10, "fs/mqueue/msgsize_max": 8192}

