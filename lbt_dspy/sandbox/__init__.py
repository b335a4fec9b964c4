"""Run untrusted, model-generated Python code in a locked-down subprocess.

Every program runs in its own ``python -I -S -B`` process (standard library only), in a new
session killed as a whole at the wall-clock limit, with rlimits (CPU, address space, processes,
file size, descriptors, message queues, no core), a memory cgroup of its own bounding all its
processes together where the host allows (else address space per process only), a scrubbed
environment and capped output. Where
the host allows (root and ``unshare``: the ``root-ns`` layer), it also gets fresh mount, PID, IPC
and network namespaces, a root filesystem that shows only ``/usr`` and the Python installation
read-only plus one private size-limited tmpfs, and a fresh unprivileged uid. The whole process
tree dies with the host (parent-death signals, also after the uid drop; Ctrl-C kills running
sandboxes). :func:`isolation` says which layers are active here; ``docs/sandbox.md`` lists what
each layer stops and what none of them can.

Modules: :mod:`.limits` (limits and results), :mod:`.modes` (layers, probe, filesystem view),
:mod:`.cgroup` (the per-run memory cgroup), :mod:`.process` (one run's process: start, kill, clean-up),
:mod:`.bootstrap` (the child side: setup, guards, the calls harness). ``lbt_dspy.sandbox.run``, the earlier name
of :mod:`.process`, still imports (docs/names.md).

Example:
    >>> r = run_python("print(sum(range(10)))")
    >>> r.status, r.stdout.strip(), r.passed
    ('ok', '45', True)
"""

from .bootstrap import CallFailed
from .limits import SandboxLimits, SandboxResult
from .modes import interpreter
from .process import isolation, run_many, run_python
from . import process as _process

import sys as _sys

from ..renamed import renamed as _renamed

# The earlier module name (a command's run is `run.py` elsewhere): `import lbt_dspy.sandbox.run` finds this module,
# and `lbt_dspy.sandbox.run` read from the package warns.
_sys.modules.setdefault(__name__ + ".run", _process)
__getattr__ = _renamed(__name__, {"run": ("lbt_dspy.sandbox.process", lambda: _process)})

__all__ = ["SandboxLimits", "SandboxResult", "CallFailed", "run_python", "run_many", "isolation", "interpreter"]
