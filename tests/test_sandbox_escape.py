"""The sandbox's kernel layers against attacks that first dig out the Python-level guards.

One test (or more) per class found open in issue 13: System V IPC, host unix sockets, world-writable
host directories, the process tree outliving a killed or interrupted host, and memory summed over
a program's processes (a cgroup per run where one can be made; RLIMIT_AS per process always). Every attack starts with ``DIG`` (drop the import guard, load ctypes): the
guards are a convenience, these layers are the barrier.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from lbt_dspy.sandbox import SandboxLimits, cgroup, isolation, run_many, run_python
from lbt_dspy.scoring.code import SCORING_LIMITS

ROOT_NS = isolation()["mode"] == "root-ns"
needs_root_ns = pytest.mark.skipif(not ROOT_NS, reason="needs the root-ns layer (root and unshare)")
needs_ipc_ns = pytest.mark.skipif(not isolation()["ipc_namespace"], reason="no IPC namespace here")

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=6, memory_mb=256, max_processes=16, max_output_bytes=100_000)
# Undo the Python-level guards first: an attacker can, so only the kernel layers may count.
DIG = ("import sys\nsys.meta_path.pop(0)\nimport ctypes, socket, _io, posix\n"
       "libc = ctypes.CDLL(None, use_errno=True)\nraw_socket = socket.socket.__mro__[-2]\n")
IPC_CREAT, IPC_RMID = 0o1000, 0
LIBC = ctypes.CDLL(None, use_errno=True)
LIBC.shmat.restype = ctypes.c_void_p


def attack(body: str, limits: SandboxLimits = FAST):
    return run_python(DIG + body, limits)


def test_dig_really_undoes_the_guards():
    # Without this the attacks below would prove nothing about the kernel layers.
    r = run_python(DIG + "print('ctypes', libc.getpid() > 0)\nprint(type(raw_socket(1, 1)).__name__)", FAST)
    assert r.stdout == "ctypes True\nsocket\n", r


# ---------------------------------------------------------------------------------------------
# System V / POSIX IPC
# ---------------------------------------------------------------------------------------------
def _sysv_keys(kind: str) -> set[int]:
    with open(f"/proc/sysvipc/{kind}") as fh:
        next(fh)
        return {int(line.split()[0]) for line in fh if line.strip()}


@needs_ipc_ns
def test_host_shared_memory_segment_is_unreachable():
    key = 0x4C420000 + os.getpid() % 0xFFFF
    shmid = LIBC.shmget(key, 4096, IPC_CREAT | 0o666)
    assert shmid >= 0
    try:
        addr = LIBC.shmat(shmid, None, 0)
        ctypes.memmove(addr, b"HOST-SECRET", 11)
        LIBC.shmdt(ctypes.c_void_p(addr))
        r = attack(f"print('get', libc.shmget({key}, 0, 0))\n"
                   f"sid = libc.shmget({key}, 4096, {IPC_CREAT} | 0o666)\n"  # same key: a different segment
                   "libc.shmat.restype = ctypes.c_void_p\n"
                   "a = libc.shmat(sid, None, 0)\nprint('data', ctypes.string_at(a, 11))\n"
                   "ctypes.memmove(a, b'PWNED-BY-SB', 11)\n"
                   f"print('by id', libc.shmat({shmid}, None, 0))\n")
        assert "get -1" in r.stdout and "HOST-SECRET" not in r.stdout, r
        addr = LIBC.shmat(shmid, None, 0)
        assert ctypes.string_at(addr, 11) == b"HOST-SECRET"
        LIBC.shmdt(ctypes.c_void_p(addr))
    finally:
        LIBC.shmctl(shmid, IPC_RMID, None)


@needs_ipc_ns
def test_ipc_objects_die_with_the_run():
    key = 0x4C430000 + os.getpid() % 0xFFFF
    before = {k: _sysv_keys(k) for k in ("shm", "msg", "sem")}
    r = attack(f"print(libc.shmget({key}, 65536, {IPC_CREAT} | 0o666), libc.msgget({key}, {IPC_CREAT} | 0o666),"
               f" libc.semget({key}, 4, {IPC_CREAT} | 0o666))\n"
               "fd = posix.open('/dev/shm/lbt-left-behind', posix.O_CREAT | posix.O_WRONLY)\nposix.write(fd, b'x')\n")
    assert r.passed and "-1" not in r.stdout, r
    for kind in ("shm", "msg", "sem"):
        assert key not in _sysv_keys(kind) - before[kind], kind
    assert not os.path.exists("/dev/shm/lbt-left-behind")


@needs_root_ns
def test_ipc_is_bounded():
    limits = SandboxLimits(cpu_seconds=2, wall_seconds=6, max_disk_mb=16)
    r = attack("big = libc.shmget(0, 64 * 2 ** 20, 0o1000 | 0o600)\n"  # above the 16 MiB cap
               "many = [libc.shmget(0, 4096, 0o1000 | 0o600) for _ in range(50)]\n"
               "queues = [libc.msgget(0, 0o1000 | 0o600) for _ in range(50)]\n"
               "sems = [libc.semget(0, 200, 0o1000 | 0o600) for _ in range(50)]\n"
               "print(big, sum(i >= 0 for i in many), sum(i >= 0 for i in queues), sum(i >= 0 for i in sems))\n",
               limits)
    big, shms, queues, sems = map(int, r.stdout.split())
    assert big == -1 and shms <= 8 and queues <= 8 and sems <= 8, r.stdout
    # shared memory in use cannot exceed the cap either: 3 x 8 MiB segments, touched
    r = attack("libc.shmat.restype = ctypes.c_void_p\nok = 0\nfor _ in range(3):\n"
               "    s = libc.shmget(0, 8 * 2 ** 20, 0o1000 | 0o600)\n"
               "    if s < 0:\n        continue\n"
               "    a = libc.shmat(s, None, 0)\n    ctypes.memset(a, 1, 8 * 2 ** 20)\n    libc.shmdt(ctypes.c_void_p(a))\n"
               "    ok += 1\nprint(ok)\n", limits)
    assert int(r.stdout) <= 2, r


# ---------------------------------------------------------------------------------------------
# Host unix sockets
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def unix_servers(tmp_path):
    """Listening pathname sockets (mode 0777) in the test's dir, /tmp and /run, plus an abstract one."""
    servers, paths = [], []
    for d in (tmp_path, Path(tempfile.gettempdir()), Path("/run")):
        p = d / f"lbt-test-{os.getpid()}-{len(paths)}.sock"
        s = socket.socket(socket.AF_UNIX)
        s.bind(str(p))
        os.chmod(p, 0o777)
        s.listen(1)
        s.settimeout(0.2)
        servers.append(s)
        paths.append(str(p))
    abstract = socket.socket(socket.AF_UNIX)
    name = f"\0lbt-test-{os.getpid()}"
    abstract.bind(name)
    abstract.listen(1)
    abstract.settimeout(0.2)
    servers.append(abstract)
    paths.append(name)
    yield paths
    for s in servers:
        with pytest.raises((socket.timeout, BlockingIOError)):
            s.accept()  # nobody got through
        s.close()
    for p in paths[:-1]:
        os.remove(p)


@needs_root_ns
def test_host_unix_sockets_are_unreachable(unix_servers):
    r = attack(f"for addr in {unix_servers!r}:\n"
               "    s = raw_socket(1, 1)\n"
               "    try:\n        s.connect(addr)\n        print('CONNECTED', repr(addr))\n"
               "    except OSError as e:\n        print('refused', e.errno)\n"
               "    d = raw_socket(1, 2)\n"  # datagram sends, too
               "    try:\n        d.sendto(b'x', addr)\n        print('SENT', repr(addr))\n"
               "    except OSError as e:\n        print('refused', e.errno)\n")
    assert "CONNECTED" not in r.stdout and "SENT" not in r.stdout and r.stdout.count("refused") == 8, r


def _walk_program() -> str:
    # Every path the program can see (but /proc): sockets, and directories it may write to.
    return ("import os, stat\nsocks, writable, n = [], [], 0\nstack = ['/']\n"
            "while stack:\n    d = stack.pop()\n"
            "    try:\n        it = list(os.scandir(d))\n    except OSError:\n        continue\n"
            "    for e in it:\n        n += 1\n"
            "        if e.is_symlink():\n            continue\n"
            "        if e.is_dir(follow_symlinks=False):\n"
            "            if e.path != '/proc':\n                stack.append(e.path)\n"
            "            if os.access(e.path, os.W_OK):\n                writable.append(e.path)\n"
            "        elif not e.is_file(follow_symlinks=False) and stat.S_ISSOCK(e.stat(follow_symlinks=False).st_mode):\n"
            "            socks.append(e.path)\n"
            "print(n, socks, sorted(writable))\n")


@needs_root_ns
def test_the_view_holds_no_socket_and_no_writable_place_but_its_own():
    r = run_python(_walk_program(), SandboxLimits(cpu_seconds=60, wall_seconds=120))
    n, socks, writable = r.stdout.split(" ", 2)
    assert int(n) > 1000 and socks == "[]", r  # it did see /usr
    assert writable.strip() == "['/dev/shm', '/sandbox', '/tmp']", writable


# ---------------------------------------------------------------------------------------------
# World-writable host directories
# ---------------------------------------------------------------------------------------------
@needs_root_ns
def test_world_writable_host_directories_keep_nothing(tmp_path):
    # /run is on no list of scratch directories: the old sandbox let writes there outlive the run
    dirs = [tmp_path / "ww", Path(tempfile.mkdtemp(prefix="lbt-ww-")), Path("/var/tmp") / f"lbt-ww-{os.getpid()}",
            Path("/run") / f"lbt-ww-{os.getpid()}"]
    for d in dirs:
        d.mkdir(exist_ok=True)
        os.chmod(d, 0o1777)
    try:
        targets = [str(d / "planted") for d in dirs] + ["/usr/lbt-planted", sys.base_prefix + "/lbt-planted",
                                                        "/var/tmp/lbt-planted", "/dev/shm/lbt-planted"]
        r = attack(f"for p in {targets!r}:\n"
                   "    for how in ('io', 'posix'):\n"
                   "        try:\n"
                   "            if how == 'io':\n                _io.FileIO(p, 'w').write(b'x')\n"
                   "            else:\n                posix.close(posix.open(p, posix.O_CREAT | posix.O_WRONLY, 0o666))\n"
                   "            print('wrote', p)\n"
                   "        except OSError as e:\n            print('no', p, e.errno)\n"
                   "posix.mkdir('/tmp/mine')\nposix.symlink('/tmp/mine', '/tmp/link')\n")
        assert r.passed, r
        for d in dirs:
            assert list(d.iterdir()) == [], d
        for p in targets[len(dirs):]:
            assert not os.path.exists(p), p
        assert not any(p.name in ("mine", "link") for p in Path(tempfile.gettempdir()).iterdir())
    finally:
        for d in dirs:
            os.rmdir(d)


# ---------------------------------------------------------------------------------------------
# The process tree dies with the host
# ---------------------------------------------------------------------------------------------
HOST = """import sys
sys.path.insert(0, {root!r})
import lbt_dspy.sandbox.process
from lbt_dspy.sandbox import SandboxLimits, run_many, run_python
if sys.argv[2] == "lifeline-only":  # no parent-death signal: the lifeline pipe alone must do it
    lbt_dspy.sandbox.process._prctl = None
limits = SandboxLimits(cpu_seconds=120, wall_seconds=120)
prog = "import os, time\\nif os.fork() == 0:\\n    os.setsid()\\n    os.fork()\\ntime.sleep(100)\\n"
if sys.argv[1] == "many":
    run_many([prog, prog], limits, max_workers=2)
else:
    run_python(prog, limits)
"""


def _tagged(tag: str) -> list[tuple[int, int]]:
    """(pid, uid) of live processes whose command line holds `tag` (the host's temp dir)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if tag.encode() in fh.read():
                        found.append((int(pid), os.stat(f"/proc/{pid}").st_uid))
            except OSError:
                pass
    return found


@pytest.mark.skipif(not isolation()["pid_namespace"], reason="only a PID namespace takes the whole tree down")
@pytest.mark.parametrize("how, sig, chain", [
    ("one", signal.SIGKILL, "both"), ("one", signal.SIGTERM, "both"), ("one", signal.SIGINT, "both"),
    ("many", signal.SIGKILL, "both"), ("many", signal.SIGTERM, "both"), ("many", signal.SIGINT, "both"),
    ("one", signal.SIGKILL, "lifeline-only"), ("many", signal.SIGKILL, "lifeline-only")])
def test_sandbox_dies_with_its_host(tmp_path, sig, how, chain):
    tag = str(tmp_path / "hosttmp")
    os.mkdir(tag)
    # SIGINT as a terminal delivers it, even when these tests run in a background job (a shell without job control
    # starts those with SIGINT ignored, and an ignored disposition is inherited)
    host = subprocess.Popen([sys.executable, "-c", HOST.format(root=str(Path(__file__).resolve().parents[1])), how,
                             chain],
                            env={**os.environ, "TMPDIR": tag}, stderr=subprocess.DEVNULL,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    want = 3 * (2 if how == "many" else 1)  # each program, its setsid child and grandchild, as the sandbox uid
    deadline = time.monotonic() + 60
    while sum(uid >= 1 << 30 for _, uid in _tagged(tag)) < want and time.monotonic() < deadline:
        time.sleep(0.05)
    dropped = [p for p, uid in _tagged(tag) if uid >= 1 << 30]
    try:
        assert len(dropped) >= want, _tagged(tag)  # the programs run, after the uid drop
        host.send_signal(sig)
        host.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _tagged(tag) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _tagged(tag) == [], f"still alive after {sig.name} of the host: {_tagged(tag)}"
    finally:
        host.kill()
        host.wait()
        for pid, _ in _tagged(tag):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# Memory summed over the program's processes
# ---------------------------------------------------------------------------------------------
def test_scoring_runs_cannot_add_processes_or_threads():
    r = run_python("import os, threading\n"
                   "try:\n    os.fork()\n    print('FORKED')\nexcept OSError as e:\n    print('fork', e.errno)\n"
                   "try:\n    threading.Thread(target=print).start()\n    print('THREAD')\n"
                   "except RuntimeError:\n    print('thread refused')\n", SCORING_LIMITS)
    assert r.stdout == "fork 11\nthread refused\n", r


def test_memory_of_all_processes_is_bounded_by_processes_times_memory():
    # 4 processes allowed x 128 MiB each: the fifth fork fails, and none gets above its own cap.
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=20, memory_mb=128, max_processes=4)
    r = run_python("import os, time\nkids = 0\nfor _ in range(10):\n"
                   "    try:\n        pid = os.fork()\n    except OSError:\n        break\n"
                   "    if pid == 0:\n"
                   "        try:\n            x = bytearray(200 * 2 ** 20)\n            print('BIG')\n"
                   "        except MemoryError:\n            pass\n"
                   "        time.sleep(0.5)\n        os._exit(0)\n"
                   "    kids += 1\n"
                   "for _ in range(kids):\n    os.wait()\nprint('kids', kids)\n", limits)
    assert "BIG" not in r.stdout and r.stdout.startswith("kids"), r
    if ROOT_NS:  # elsewhere RLIMIT_NPROC also counts unshare and the init, or the host user's processes
        assert r.stdout.strip() == "kids 3", r


# A program whose 4 children each write 48 MiB (well under memory_mb) and hold it for a second;
# it exits with the number of children that did not exit 0.
FORK_4_X_48 = ("import os, time\nkids = []\nfor _ in range(4):\n    pid = os.fork()\n    if pid == 0:\n"
               "        x = b'\\x01' * (48 * 2 ** 20)\n        time.sleep(1.0)\n        os._exit(0)\n"
               "    kids.append(pid)\n"
               "bad = sum(os.waitpid(p, 0)[1] != 0 for p in kids)\nprint('done', len(kids), bad)\nraise SystemExit(bad)\n")
TOTAL = {"cpu_seconds": 5, "wall_seconds": 15, "memory_mb": 128, "max_processes": 8}


@pytest.fixture
def made_cgroups(monkeypatch):
    """The paths of the run cgroups the sandbox makes during the test (so their removal can be checked)."""
    made, real = [], cgroup.MemoryCgroup._make.__func__

    def recording(cls, *args):
        cg = real(cls, *args)
        made.append(cg.path)
        return cg

    monkeypatch.setattr(cgroup.MemoryCgroup, "_make", classmethod(recording))
    return made


def _run_cgroups_here() -> list[str]:
    """Run cgroups of this host process that exist now."""
    parent = cgroup._chosen[1] if cgroup._chosen else None
    mine = f"{cgroup.PREFIX}{os.stat('/proc/self/ns/pid').st_ino}-{os.getpid()}-"
    return [] if parent is None else [n for n in os.listdir(parent) if n.startswith(mine)]


def test_total_memory_of_all_processes_is_bounded_by_a_cgroup(made_cgroups):
    # Fits the total (4 x 48 MiB + the interpreters < 400 MiB): runs to exit 0, on every machine.
    fits = run_python(FORK_4_X_48, SandboxLimits(**TOTAL, total_memory_mb=400))
    assert fits.passed and fits.stdout == "done 4 0\n", fits
    # The fallback and second layer, on every machine: each process is still bounded by RLIMIT_AS.
    big = run_python("x = b'\\x01' * (200 * 2 ** 20)", SandboxLimits(**TOTAL, total_memory_mb=400))
    assert big.status == "error" and "MemoryError" in big.stderr, big
    info = isolation()
    assert isinstance(info["total_memory_cgroup"], bool) and info["cgroup_memory"]
    if not info["total_memory_cgroup"]:
        pytest.skip(f"no memory cgroup can be made here, so only the per-process bound (checked above) holds: "
                    f"{info['cgroup_memory']}")
    assert made_cgroups  # the runs above really had one
    # Over the total (4 x 48 MiB > 120 MiB), though each child is far under memory_mb: stopped.
    over = run_python(FORK_4_X_48, SandboxLimits(**TOTAL, total_memory_mb=120))
    assert over.status == "killed" and not over.passed, over
    assert over.detail.startswith("memory limit (total over all processes) exceeded"), over
    assert "total_memory_mb=120" in over.detail and "done" not in over.stdout, over
    assert over.duration < 5, over  # at the bound, not at the wall-clock limit
    assert run_python("print(6 * 7)", FAST).stdout == "42\n"  # the host carries on
    assert not [p for p in made_cgroups if os.path.exists(p)] and _run_cgroups_here() == []


def test_without_a_cgroup_only_each_process_is_bounded(monkeypatch):
    # The documented fallback (no cgroup can be made, or LBT_SANDBOX_CGROUP=0): RLIMIT_AS per
    # process, so 4 x 48 MiB goes through a 120 MiB total, and isolation() says why.
    monkeypatch.setenv("LBT_SANDBOX_CGROUP", "0")
    info = isolation()
    assert info["total_memory_cgroup"] is False and "RLIMIT_AS" in info["cgroup_memory"], info
    r = run_python(FORK_4_X_48, SandboxLimits(**TOTAL, total_memory_mb=120))
    assert r.passed and r.stdout == "done 4 0\n", r
    big = run_python("x = b'\\x01' * (200 * 2 ** 20)", SandboxLimits(**TOTAL, total_memory_mb=120))
    assert big.status == "error" and "MemoryError" in big.stderr, big


def test_a_cgroup_the_program_cannot_join_turns_cgroups_off(monkeypatch, made_cgroups):
    if not isolation()["total_memory_cgroup"]:
        pytest.skip(f"no memory cgroup here: {isolation()['cgroup_memory']}")
    monkeypatch.setattr(cgroup, "_disabled", "")  # restored (cgroups on again) after the test
    real = cgroup.MemoryCgroup._make.__func__

    def unjoinable(cls, *args):
        cg = real(cls, *args)
        cg.procs = os.path.join(cg.path, "no-such-file")
        return cg

    monkeypatch.setattr(cgroup.MemoryCgroup, "_make", classmethod(unjoinable))
    r = run_python("print('still runs')", FAST)
    assert r.passed and r.stdout == "still runs\n", r
    info = isolation()
    assert info["total_memory_cgroup"] is False and "could not join" in info["cgroup_memory"], info
    assert run_python("print(1)", FAST).passed  # and later runs go without trying
    assert _run_cgroups_here() == []


def test_no_cgroup_is_left_behind(monkeypatch, made_cgroups):
    from lbt_dspy.sandbox import process as sandbox_run

    programs = ["print(1)",  # ok
                "import os\nif os.fork() == 0:\n    os.setsid()\n    import time\n    time.sleep(30)\n",  # a stray
                "import time\ntime.sleep(30)",  # wall-clock limit
                FORK_4_X_48]  # over the total (with a cgroup)
    results = run_many(programs, SandboxLimits(**{**TOTAL, "wall_seconds": 3}, total_memory_mb=120), max_workers=2)
    assert results[0].passed and results[2].status == "timeout", results
    if isolation()["total_memory_cgroup"]:
        assert results[3].status == "killed" and results[3].detail.startswith("memory limit"), results[3]

    # The host fails mid-run (here: Ctrl-C while reading the output): the cgroup goes all the same.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sandbox_run, "_read_output", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_python("import time\ntime.sleep(30)", FAST)
    if isolation()["total_memory_cgroup"]:
        assert len(made_cgroups) == 5
    assert not [p for p in made_cgroups if os.path.exists(p)] and _run_cgroups_here() == []


@needs_root_ns
def test_all_writable_places_share_one_disk_budget():
    r = attack("n = 0\nfor d in ('/tmp', '/dev/shm', '/sandbox'):\n"
               "    try:\n        n += _io.FileIO(d + '/big', 'w').write(b'x' * 12 * 2 ** 20)\n"
               "    except OSError:\n        pass\nprint(n)\n",
               SandboxLimits(cpu_seconds=5, wall_seconds=10, max_disk_mb=24, max_file_mb=100))
    assert 0 < int(r.stdout) <= 24 * 2 ** 20, r


def test_parallel_sandboxes_share_nothing():
    # Two programs at once: neither sees the other's files, processes or IPC objects.
    prog = ("import os, time, sys\nopen('mine', 'w').write(str(os.getpid()))\ntime.sleep(0.5)\n"
            "print(sorted(os.listdir('.')), len([p for p in os.listdir('/proc') if p.isdigit()]))\n")
    a, b = run_many([prog, prog], FAST, max_workers=2)
    assert a.stdout == b.stdout and a.stdout.startswith("['main.py', 'mine']" if not ROOT_NS else "['mine']"), (a, b)


@needs_root_ns
def test_installed_packages_and_host_files_are_not_in_the_view():
    hidden = isolation()["hidden_inside"]
    assert any(p.endswith("site-packages") for p in hidden)
    r = run_python(f"import os\nfor p in {hidden!r}:\n    print(os.listdir(p))\n"
                   "print(sorted(os.listdir('/')))\n", FAST)
    lines = r.stdout.splitlines()
    assert lines[:-1] == ["[]"] * len(hidden), r
    top = set(eval(lines[-1]))  # noqa: S307 - a list of names printed by the program
    assert top <= {"bin", "dev", "lib", "lib32", "lib64", "libx32", "proc", "sandbox", "sbin", "tmp", "usr",
                   *(p.strip("/").split("/")[0] for p in isolation()["exposed"])}, top
    assert not {"etc", "work", "home", "var", "run"} & top
