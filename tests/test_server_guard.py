"""No process of a server lbt starts outlives lbt, even a SIGKILLed lbt (`models/server_guard.py`), and replicas
start together. Stand-in servers here (a process that starts an "engine core" child, as vLLM's API server does);
the real vLLM server and a SIGKILLed `lbt serve`: the integration test at the end."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest

from lbt_dspy.errors import LbtEnvironmentError
from lbt_dspy.models import ModelPool
from lbt_dspy.models.server import LocalServer, free_port

REPO = Path(__file__).resolve().parent.parent

# A stand-in server: starts a child (vLLM's engine core) in its own process group, then after `delay` seconds
# writes the child's pid to `ready` (its "health"), then sleeps ("serve") or exits with code 3 ("exit").
SERVER = textwrap.dedent("""
    import subprocess, sys, time
    mode, ready, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    if mode == "fail":
        sys.exit(3)
    time.sleep(delay)
    open(ready, "w").write(str(child.pid))
    time.sleep(1 if mode == "exit" else 600)  # "exit": answers for a second, then exits
    sys.exit(3)
""")


class StandIn(LocalServer):
    kind = "stand-in server"

    def __init__(self, tmp_path, mode="serve", delay=0.0):
        super().__init__(tmp_path / "ckpt", log_path=tmp_path / f"server-{mode}-{free_port()}.log",
                         startup_timeout=30)
        self.mode, self.delay, self.ready = mode, delay, tmp_path / f"ready-{self.port}"

    def command(self):
        return [sys.executable, "-c", SERVER, self.mode, str(self.ready), str(self.delay)]

    def healthy(self):
        return self.ready.exists() and self.ready.read_text() != ""


def group_alive(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`."""
    alive = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(stat[2]) == pgid and stat[0] != "Z":
                alive.append(int(entry))
    return alive


def gone_within(pgid: int, seconds: float) -> list[int]:
    """Wait until no process of group `pgid` is left (at most `seconds`); SIGKILL and return any left."""
    deadline = time.monotonic() + seconds
    while group_alive(pgid) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = group_alive(pgid)
    for pid in left:  # never leave one behind, whatever the test says
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_sigkilled_lbt_takes_its_servers_whole_process_group_with_it(tmp_path):
    """A process that started a server (as lbt does) is SIGKILLed: the server and its child, in the server's
    process group, are gone within seconds (measured: under 1 s; the guard looks every 0.5 s)."""
    host = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        from test_server_guard import StandIn
        server = StandIn(Path({str(tmp_path)!r})).start()
        print(server.proc.pid, server.ready.read_text(), flush=True)
        time.sleep(600)
    """)
    proc = subprocess.Popen([sys.executable, "-c", host], stdout=subprocess.PIPE, text=True, cwd=REPO,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        group, engine = map(int, proc.stdout.readline().split())
        assert engine in group_alive(group)  # the server's child: vLLM's engine core
    finally:
        proc.kill()
        proc.wait()
    t0 = time.monotonic()
    assert gone_within(group, 10) == [], "the server's processes outlived lbt"
    print(f"\nthe server's group was gone {time.monotonic() - t0:.2f} s after lbt's SIGKILL")


def test_a_server_that_dies_leaves_nothing_and_lbt_sees_how_it_died(tmp_path):
    """The server SIGKILLed (its child, vLLM's engine core, orphaned): the guard kills the child and dies as the
    server did, so lbt sees -9; a server that exits with code 3 is seen exiting with code 3."""
    server = StandIn(tmp_path).start()
    group = server.proc.pid
    try:
        victim = [p for p in group_alive(group) if p != group and str(p) != server.ready.read_text()]
        assert len(victim) == 1  # the server process itself
        os.kill(victim[0], signal.SIGKILL)
        assert server.proc.wait(timeout=10) == -signal.SIGKILL
        assert gone_within(group, 5) == []  # the child too, before lbt stops anything
    finally:
        server.stop()
    exits = StandIn(tmp_path, mode="exit").start()
    assert exits.proc.wait(timeout=10) == 3 and gone_within(exits.proc.pid, 5) == []
    exits.stop()


def test_stop_still_stops_the_whole_group(tmp_path):
    server = StandIn(tmp_path).start()
    group = server.proc.pid
    server.stop()
    assert gone_within(group, 5) == []


def test_replicas_start_together_and_one_that_fails_stops_the_others(tmp_path):
    """Three servers that take 1.5 s each to answer start in about 1.5 s, not 4.5 s; when one cannot start, the
    others are stopped and the error is one line naming its endpoint."""
    with ModelPool() as pool:
        t0 = time.monotonic()
        servers = pool.shared_servers([(i, lambda: StandIn(tmp_path, delay=1.5)) for i in range(3)])
        took = time.monotonic() - t0
        assert len({s.port for s in servers}) == 3 and all(s.healthy() for s in servers)
        assert took < 4, f"{took:.1f} s: one after another?"
        assert pool.shared_servers([(i, None) for i in range(3)]) == servers  # shared: not started again
    assert all(s.proc is None for s in servers)  # the pool stopped them

    made = []

    def factory(mode):
        made.append(StandIn(tmp_path, mode=mode, delay=60))
        return made[-1]
    with ModelPool() as pool:
        t0 = time.monotonic()
        with pytest.raises(LbtEnvironmentError) as err:
            pool.shared_servers([("a", lambda: factory("serve")), ("b", lambda: factory("fail")),
                                 ("c", lambda: factory("serve"))])
        assert time.monotonic() - t0 < 10  # the others were not waited for (60 s to answer)
        assert not pool._servers
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{made[1].api_base}: stand-in server for ")
    assert "exited with code 3" in msg and str(made[1].log_path) in msg
    assert all(s.proc is None for s in made)


@pytest.mark.integration
def test_a_sigkilled_lbt_serve_leaves_no_vllm_process(tmp_path):
    """`lbt serve` (the embedded model on a real vLLM server) is SIGKILLed once its server answers: within 15 s
    no process of the server's group is left (vLLM's API server, engine core and workers: ~3.1 GB)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lbt_dspy.cli", "serve", "--port", str(port)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(REPO), "VLLM_CPU_KVCACHE_SPACE": "1"})
    group = None
    try:
        deadline = time.monotonic() + 600
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        assert proc.poll() is None, "lbt serve exited before its server answered"
        children = [int(p) for p in os.listdir("/proc") if p.isdigit() and _ppid(int(p)) == proc.pid]
        group = os.getpgid(children[0])
        members = group_alive(group)
        assert len(members) >= 3, members  # API server, engine core (and the guard): what must all go
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        t0 = time.monotonic()
        left = gone_within(group, 15)
        print(f"\n{len(members)} processes in the server's group; gone {time.monotonic() - t0:.1f} s after "
              f"lbt's SIGKILL" if not left else f"\nleft: {left}")
        assert left == [], f"vLLM processes outlived lbt: {left}"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if group is not None:
            gone_within(group, 0)


def _ppid(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except OSError:
        return -1
