"""Hostile programs against lbt_dspy.sandbox: each is contained, scored 0, and leaves the host intact."""

from __future__ import annotations

import ast
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from lbt_dspy.sandbox import SandboxLimits, SandboxResult, isolation, run_many, run_python
from lbt_dspy.scoring.code import CodeScorer

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=3, memory_mb=256, max_processes=16, max_output_bytes=100_000)
SLACK = 2.5  # seconds on top of the wall limit for startup, kill and cleanup on a loaded 2-core box

# A toy problem: every hostile "solution" below also defines a correct `add` after its attack,
# so a sandbox that failed to contain the attack would let it score 1.
ADD = {"task_id": "toy/add", "prompt": "", "entry_point": "add",
       "visible": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0"],
       "hidden": ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(10, 5) == 15"]}
GOOD_ADD = "def add(a, b):\n    return a + b\n"
SCORER = CodeScorer(limits=FAST)


def scored(attack: str) -> float:
    """V-score of a solution that runs `attack` at import time, then defines a correct `add`."""
    return SCORER.score(textwrap.dedent(attack) + "\n" + GOOD_ADD, ADD)


def sandbox_processes(tag: str) -> list[int]:
    """Live processes started by sandboxes whose temp dir lies under `tag` (their command line
    holds it: the bootstrap's config names the run's directory; forked children keep it)."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    if tag.encode() in fh.read():
                        found.append(int(pid))
            except OSError:
                pass
    return found


def assert_no_leftovers(tag: str, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while sandbox_processes(tag) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sandbox_processes(tag) == []


@pytest.fixture
def tag(tmp_path_factory, monkeypatch):
    """A temp dir of our own for the sandboxes of one test, so leftovers are ours, not a neighbour's."""
    d = tmp_path_factory.mktemp("sandbox-tmp")
    monkeypatch.setattr(tempfile, "tempdir", str(d))
    return str(d)


@pytest.fixture
def host(tmp_path, monkeypatch):
    """The host's working directory with a canary file; asserts after the test that it survived."""
    monkeypatch.chdir(tmp_path)
    canary = tmp_path / "canary.txt"
    canary.write_text("alive")
    yield tmp_path
    assert canary.read_text() == "alive"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt"]


@pytest.fixture
def dummy():
    """An unrelated host process the sandbox must not be able to kill."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc
    assert proc.poll() is None, "the sandbox killed a host process"
    proc.kill()
    proc.wait()


def within_limits(r: SandboxResult, limits: SandboxLimits = FAST) -> None:
    assert r.duration < limits.wall_seconds + SLACK


# ---------------------------------------------------------------------------------------------
# Sanity
# ---------------------------------------------------------------------------------------------
def test_plain_program_runs():
    r = run_python("import sys\nprint(sum(range(10)))\nprint('err', file=sys.stderr)")
    assert (r.status, r.returncode, r.stdout, r.stderr, r.passed) == ("ok", 0, "45\n", "err\n", True)


def test_stdin_error_and_exit_codes():
    assert run_python("print(input()[::-1])", stdin="abc\n").stdout == "cba\n"
    r = run_python("raise ValueError('boom')")
    assert r.status == "error" and r.returncode == 1 and "ValueError: boom" in r.stderr and not r.passed
    r = run_python("import sys; sys.exit(3)")
    assert (r.status, r.returncode) == ("error", 3)


def test_correct_solution_scores_one():
    assert SCORER.score(GOOD_ADD, ADD) == 1.0
    assert CodeScorer(mode="hidden", limits=FAST).score(GOOD_ADD, ADD) == 1.0


def test_run_many_keeps_order_and_runs_in_parallel():
    codes = [f"import time; time.sleep(0.3); print({i})" for i in range(4)]
    t = time.monotonic()
    results = run_many(codes, FAST, max_workers=4)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(4)]
    assert time.monotonic() - t < 4 * 0.3 + 1.0  # not run one after another


def test_isolation_report():
    info = isolation()
    assert info["python_guards"] and info["rlimits"]
    assert info["mode"] in ("root-ns", "user-ns", "plain")
    if os.geteuid() == 0 and info["mode"] != "plain":
        assert info["uid_drop"]


def test_total_memory_limit_defaults_and_validation():
    assert SandboxLimits().total_memory_bytes == 2 * 512 * 2 ** 20  # None: 2 x memory_mb
    assert SandboxLimits(memory_mb=100, total_memory_mb=300).total_memory_bytes == 300 * 2 ** 20
    for bad in (0, -1, True, "512"):
        with pytest.raises(ValueError, match="total_memory_mb"):
            SandboxLimits(total_memory_mb=bad)
    info = isolation()
    assert isinstance(info["total_memory_cgroup"], bool) and info["cgroup_memory"]


def test_cgroup_places_are_found_for_v1_and_v2(tmp_path):
    """Where a run's memory cgroup would be made, from /proc/self/cgroup and mountinfo (fake ones)."""
    from lbt_dspy.sandbox.cgroup import candidates

    v1 = tmp_path / "v1"
    (v1 / "process_api" / "abc").mkdir(parents=True)
    found, why = candidates("4:memory:/process_api/abc\n0::/\n",
                            f"30 25 0:26 / {v1} rw,nosuid shared:9 - cgroup cgroup rw,memory\n")
    assert found == [(1, str(v1 / "process_api" / "abc")), (1, str(v1))] and not why
    v2 = tmp_path / "v2"
    (v2 / "user.slice" / "app.scope").mkdir(parents=True)
    (v2 / "cgroup.controllers").write_text("cpu io memory pids\n")
    mountinfo = f"31 25 0:27 / {v2} rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n"
    found, why = candidates("0::/user.slice/app.scope\n", mountinfo)
    assert found == [(2, str(v2 / "user.slice" / "app.scope")), (2, str(v2 / "user.slice")), (2, str(v2))]
    (v2 / "cgroup.controllers").write_text("cpu pids\n")  # e.g. this VM's hybrid tree: no memory in v2
    found, why = candidates("0::/user.slice/app.scope\n", mountinfo)
    assert found == [] and "no memory controller" in why


# ---------------------------------------------------------------------------------------------
# Hostile programs (all with the kernel layers this machine offers)
# ---------------------------------------------------------------------------------------------
def test_infinite_loop(host):
    r = run_python("while True:\n    pass", FAST)
    assert r.status == "timeout" and not r.passed
    within_limits(r)
    assert scored("while True:\n    pass") == 0.0


def test_sleep_forever_hits_wall_limit(host):
    r = run_python("import time\ntime.sleep(1000)", FAST)
    assert r.status == "timeout" and "wall-clock" in r.detail
    within_limits(r)


@pytest.mark.skipif(os.geteuid() == 0 and not isolation()["uid_drop"],
                    reason="RLIMIT_NPROC does not bind root: no fork bombs without a uid drop")
def test_fork_bomb(host, tag):
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    r = run_python(bomb, FAST)
    assert not r.passed
    within_limits(r)
    assert_no_leftovers(tag)
    assert scored(bomb) == 0.0
    assert_no_leftovers(tag)


def test_memory_bomb(host):
    r = run_python("x = bytearray(10 ** 10)", FAST)
    assert r.status == "error" and "MemoryError" in r.stderr
    r = run_python("x = []\nwhile True:\n    x.append(' ' * 10 ** 6)", FAST)
    assert not r.passed
    within_limits(r)
    assert scored("x = bytearray(10 ** 10)") == 0.0


def test_huge_output(host):
    r = run_python("while True:\n    print('x' * 1000)", FAST)
    assert r.status == "output_limit" and r.truncated
    assert len(r.stdout) <= FAST.max_output_bytes
    within_limits(r)
    assert scored("while True:\n    print('x' * 1000)") == 0.0


def test_huge_file(host):
    r = run_python("with open('big', 'wb') as f:\n    f.write(b'x' * (50 * 2 ** 20))", FAST)
    assert not r.passed and "File too large" in r.stderr


def test_writing_outside_its_directory(host):
    target = host / "canary.txt"
    for attack in (f"open({str(target)!r}, 'w').write('pwned')",
                   f"import os\nfd = os.open({str(target)!r}, os.O_WRONLY | os.O_TRUNC)\nos.write(fd, b'pwned')",
                   # bypasses the Python guard: only the kernel layers stop this one
                   f"import _io\n_io.FileIO({str(target)!r}, 'w').write(b'pwned')",
                   f"open({str(host / 'new.txt')!r}, 'w').write('pwned')"):
        r = run_python(attack, FAST)
        assert not r.passed, attack
        assert scored(attack) == 0.0
    # writing inside its own directory is fine
    assert run_python("open('mine.txt', 'w').write('ok')\nprint(open('mine.txt').read())").stdout == "ok\n"


def test_deleting_host_files(host):
    target = host / "canary.txt"
    for attack in (f"import os\nos.remove({str(target)!r})",
                   f"import shutil\nshutil.rmtree({str(host)!r})",
                   f"import posix\nposix.unlink({str(target)!r})",  # bypasses the guard
                   f"import os\nos.chdir({str(host)!r})\nos.remove('canary.txt')"):
        assert not run_python(attack, FAST).passed, attack
        assert scored(attack) == 0.0


def test_network_connection(host):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.5)
        port = server.getsockname()[1]
        attacks = (f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('CONNECTED')",
                   "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=2)\nprint('CONNECTED')",
                   # the real socket class is still reachable: only the network namespace stops it
                   f"import socket\nraw = socket.socket.__mro__[-2]\ns = raw(2, 1)\ns.settimeout(2)\n"
                   f"s.connect(('127.0.0.1', {port}))\nprint('CONNECTED')")
        for attack in attacks:
            r = run_python(attack, FAST)
            assert "CONNECTED" not in r.stdout and not r.passed, (attack, r)
            within_limits(r)
            assert scored(attack) == 0.0
        with pytest.raises(socket.timeout):
            server.accept()


def test_network_bypass_blocked_by_kernel_when_namespaced():
    if not isolation()["network_namespace"]:
        pytest.skip("no network namespace on this machine")
    r = run_python("import socket\nraw = socket.socket.__mro__[-2]\ns = raw(2, 1)\ns.settimeout(2)\n"
                   "try:\n    s.connect(('1.1.1.1', 80))\nexcept OSError as e:\n    print('kernel says', e.errno)\n",
                   FAST)
    assert r.stdout.startswith("kernel says"), r


def test_killing_its_parent(host, dummy):
    # Denied by the guard (or, for the bypass, aimed at a pid the PID namespace does not show).
    for attack in (f"import os, signal\nos.kill({dummy.pid}, signal.SIGKILL)",
                   f"import os, signal\nos.killpg(os.getpgid({dummy.pid}), signal.SIGKILL)",
                   f"import posix, signal\nposix.kill({dummy.pid}, signal.SIGKILL)"):
        if attack.startswith("import posix") and not isolation()["pid_namespace"]:
            continue  # without a PID namespace only the guard stands between this and the dummy
        assert not run_python(attack, FAST).passed, attack
        assert scored(attack) == 0.0
    # Its parent is the sandbox's own init (namespaces) or the host (plain, where the guard
    # refuses): either way the host survives; dummy and canary are checked by the fixtures.
    run_python("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", FAST)
    run_python("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)", FAST)


@pytest.mark.skipif(not isolation()["pid_namespace"], reason="kill(-1) is only safe to try inside a PID namespace")
def test_killing_everything(host, dummy):
    for attack in ("import os, signal\nos.kill(-1, signal.SIGKILL)",
                   "import posix, signal\nposix.kill(-1, signal.SIGKILL)"):  # bypasses the guard
        r = run_python(attack + "\nprint('still here')", FAST)
        within_limits(r)
    assert dummy.poll() is None


def test_deep_recursion(host):
    attack = "import sys\nsys.setrecursionlimit(10 ** 7)\ndef f(n):\n    return f(n + 1)\nf(0)"
    r = run_python(attack, FAST)
    assert not r.passed
    within_limits(r)
    assert scored(attack) == 0.0


@pytest.mark.parametrize("trick", [
    "import sys\nsys.exit(0)",
    "import os\nos._exit(0)",
    "raise SystemExit",
    "import sys\nprint('PASSED')\nsys.stdout.flush()\nimport os\nos._exit(0)",
])
def test_exit_before_checks_does_not_pass(host, trick):
    assert run_python(trick, FAST).returncode == 0  # the process "succeeds"...
    assert scored(trick) == 0.0  # ...but no check ran, so the score is 0


@pytest.mark.parametrize("trick", [
    # a wrong solution whose exit hook turns the failure into exit 0
    "import atexit, os\natexit.register(lambda: os._exit(0))\nGOOD = False",
    "import sys\nsys.excepthook = lambda *a: None\nGOOD = False",
    # ignoring SIGXCPU: killed at the hard CPU limit instead
    "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "while True:\n    pass",
    # a handler that exits 0 on any alarm
    "import signal, os\nsignal.signal(signal.SIGALRM, lambda *a: os._exit(0))\nsignal.alarm(1)\nGOOD = False",
])
def test_signal_and_atexit_tricks(host, trick):
    wrong = textwrap.dedent(trick) + "\ndef add(a, b):\n    return 0 if not globals().get('GOOD', True) else a + b\n"
    t = time.monotonic()
    assert SCORER.score(wrong, ADD) == 0.0
    assert time.monotonic() - t < 2 * (FAST.wall_seconds + SLACK)


def test_environment_secrets_are_not_inherited(host, monkeypatch):
    secret = "sk-lbt-fake-" + os.urandom(8).hex()
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    spy = ("import os, glob\nprint(dict(os.environ))\n"
           "for p in glob.glob('/proc/*/environ'):\n"
           "    try:\n        print(open(p, 'rb').read())\n    except OSError:\n        pass\n")
    r = run_python(spy, FAST)
    assert r.passed and secret not in r.stdout and "OPENAI_API_KEY" not in r.stdout
    allowed = {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "LBT_SANDBOX_RUN"}
    assert set(ast.literal_eval(r.stdout.splitlines()[0])) <= allowed


def test_escaped_background_process_is_killed(host, tag):
    attack = ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(30)\n    os._exit(0)\n"
              "print('parent done')")
    r = run_python(attack, FAST)
    assert r.stdout == "parent done\n"
    within_limits(r)
    assert_no_leftovers(tag)


def test_temp_dirs_are_removed_even_if_made_unremovable(host):
    before = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("lbt-sandbox-")}
    r = run_python("import os\nos.makedirs('a/b')\nopen('a/b/f', 'w').write('x')\n"
                   "os.chmod('a/b', 0)\nos.chmod('a', 0)", FAST)
    assert r.passed
    after = {p for p in os.listdir(tempfile.gettempdir()) if p.startswith("lbt-sandbox-")}
    assert after <= before


def test_project_and_answer_keys_are_hidden():
    if isolation()["mode"] != "root-ns":
        pytest.skip("only the root-ns layer hides the project")
    from lbt_dspy.data.code import humaneval_path

    r = run_python(f"print(open({str(humaneval_path())!r}, 'rb').read(10))", FAST)
    assert not r.passed and "No such file" in r.stderr
    project = Path(__file__).resolve().parents[1]
    listing = run_python(f"import os\nprint(os.listdir({str(project)!r}))", FAST)
    # hidden either way: an empty mount over it, or (checkout under /tmp) not there at all
    assert listing.stdout == "[]\n" or "No such file" in listing.stderr


# ---------------------------------------------------------------------------------------------
# The Python-level guards alone (no namespaces, no uid drop: what a bare host gets)
# ---------------------------------------------------------------------------------------------
def test_guards_alone_deny_writes_deletes_kills_spawns_and_sockets(host, dummy):
    target = host / "canary.txt"
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        server.settimeout(0.3)
        port = server.getsockname()[1]
        attacks = {
            "write": f"open({str(target)!r}, 'w').write('pwned')",
            "os.open": f"import os\nos.open({str(target)!r}, os.O_WRONLY | os.O_TRUNC)",
            "pathlib": f"import pathlib\npathlib.Path({str(target)!r}).write_text('pwned')",
            "delete": f"import os\nos.remove({str(target)!r})",
            "rename": f"import os\nos.rename({str(target)!r}, 'stolen')",
            "kill": f"import os, signal\nos.kill({dummy.pid}, signal.SIGKILL)",
            "subprocess": "import subprocess\nsubprocess.run(['true'])",
            "system": "import os\nos.system('true')",
            "ctypes": "import ctypes",
            "socket": f"import socket\nsocket.create_connection(('127.0.0.1', {port}))",
        }
        results = run_many(list(attacks.values()), FAST, isolate=False)
        for (name, _), r in zip(attacks.items(), results):
            assert r.status == "error" and ("sandbox:" in r.stderr or "disabled" in r.stderr), (name, r)
        with pytest.raises(socket.timeout):
            server.accept()
    r = run_python("open('mine.txt', 'w').write('ok')\nimport os\nos.remove('mine.txt')\nprint('fine')", isolate=False)
    assert r.stdout == "fine\n"


def test_leftover_detector_sees_running_sandboxes(tag):
    # The check above would pass vacuously if it could not see sandboxed processes at all.
    import threading

    t = threading.Thread(target=run_python, args=("import time\ntime.sleep(2)", FAST))
    t.start()
    deadline = time.monotonic() + 10
    seen = []
    while not seen and time.monotonic() < deadline:
        seen = sandbox_processes(tag)
        time.sleep(0.02)
    t.join()
    assert seen
    assert_no_leftovers(tag)


def test_host_file_descriptors_above_1024_do_not_break_the_sandbox():
    """A long-lived host (a test session, a server) may hold fds numbered past select()'s 1024 limit; the
    sandbox's PID 1 watches its lifeline with poll, so runs still work (seen: a full test session)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip("cannot open 1200 files here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200) if hard == resource.RLIM_INFINITY else min(max(soft, 1200), hard), hard))
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        res = run_python("print(6 * 7)")
        assert res.passed and res.stdout.strip() == "42", res
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
