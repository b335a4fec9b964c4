"""The guard between lbt and a server it starts, so that no part of the server outlives lbt, even a SIGKILLed lbt.

Run as a script (standard library only, nothing of lbt imported): ``python server_guard.py LBT_PID CMD...``.
`LocalServer.start` runs it in a session (and process group) of its own; it starts ``CMD`` in that group, so vLLM's
API server, its engine core and its workers all share the guard's group. Then, every 0.5 s:

- lbt is gone (the guard's parent is no longer ``LBT_PID``: lbt died, even by SIGKILL): SIGKILL to the whole group,
  the guard included. A parent-death signal on the server would reach its API server alone: its engine-core and
  worker processes (~3.1 GB for the embedded model) would run on forever.
- the server exited (crashed, was killed, or stopped): SIGKILL to whatever it left in the group (Linux: found in
  ``/proc``; elsewhere lbt's `LocalServer.stop` kills the group), then the guard exits as the server did (its
  exit code, or killed by the same signal), which is what lbt sees.

SIGTERM (lbt's `LocalServer.stop` sends it to the whole group) does not stop the guard: the server gets it too and
decides when to exit; the guard follows it.
"""

import os
import signal
import subprocess
import sys


def _rest_of_group() -> list:
    """The other live processes of the guard's process group (Linux; elsewhere none are found)."""
    me, group, found = os.getpid(), os.getpgrp(), []
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if entry.isdigit() and int(entry) != me:
            try:
                with open(f"/proc/{entry}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
            except (OSError, IndexError):
                continue
            if int(fields[2]) == group and fields[0] != "Z":
                found.append(int(entry))
    return found


def main(argv: list) -> None:
    parent, cmd = int(argv[0]), argv[1:]
    signal.signal(signal.SIGTERM, lambda *_: None)  # a handler, not SIG_IGN: the server gets the default back
    try:
        server = subprocess.Popen(cmd)
    except OSError as exc:
        print(f"lbt server guard: cannot run {cmd[0]}: {exc.strerror or exc}", file=sys.stderr, flush=True)
        sys.exit(127)
    while True:
        try:
            code = server.wait(timeout=0.5)
            break
        except subprocess.TimeoutExpired:
            if os.getppid() != parent:  # lbt is gone
                os.killpg(0, signal.SIGKILL)
    for pid in _rest_of_group():
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    if code < 0:  # killed by a signal: so is the guard, for lbt to see
        try:
            signal.signal(-code, signal.SIG_DFL)
        except (OSError, ValueError):  # SIGKILL has no handler to reset
            pass
        os.kill(os.getpid(), -code)
    sys.exit(code if code >= 0 else 128 - code)


if __name__ == "__main__":
    main(sys.argv[1:])
