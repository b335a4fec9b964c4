"""What a sandboxed program may use (:class:`SandboxLimits`) and what became of it (:class:`SandboxResult`)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SandboxLimits:
    """Resource limits for one sandboxed program.

    Args:
        cpu_seconds: CPU time per process (``RLIMIT_CPU``: SIGXCPU at the limit, SIGKILL 1 s later).
        wall_seconds: Wall-clock time for the whole run; the process group is SIGKILLed after it.
        memory_mb: Address space per process (``RLIMIT_AS``).
        total_memory_mb: Memory of the program and all its descendants together (RAM, tmpfs and
            kernel memory charged to them; no swap), bounded by a cgroup made per run where this
            host allows (``isolation()["total_memory_cgroup"]``); going over kills the whole program
            (status ``"killed"``, detail "memory limit ... exceeded"). ``None`` (the default) means
            ``2 x memory_mb``. Where no cgroup can be made, only ``memory_mb`` per process holds (see
            docs/sandbox.md).
        max_processes: Processes/threads the program may have (``RLIMIT_NPROC``). Without a memory
            cgroup, memory summed over the program's processes is at most ``max_processes x
            memory_mb`` plus the tmpfs (see docs/sandbox.md); scoring runs use 1.
        max_file_mb: Largest file the program may write (``RLIMIT_FSIZE``).
        max_output_bytes: Bytes kept per output stream; writing more kills the program.
        max_open_files: File descriptors per process (``RLIMIT_NOFILE``).
        max_disk_mb: Size of the one tmpfs holding every writable place (work dir, ``/tmp``,
            ``/dev/shm``) under the ``root-ns`` layer; also the cap on System V shared memory.

    Example:
        >>> SandboxLimits(cpu_seconds=2, wall_seconds=4).memory_mb
        512
    """

    cpu_seconds: float = field(default=5, metadata={"help": "CPU seconds per process (RLIMIT_CPU)"})
    wall_seconds: float = field(default=10, metadata={"help": "wall-clock seconds before the process group is killed"})
    memory_mb: int = field(default=512, metadata={"help": "address space per process in MiB (RLIMIT_AS)"})
    total_memory_mb: int | None = field(default=None, metadata={
        "help": "memory of all the program's processes together in MiB (a per-run cgroup where the host "
                "allows; None: 2 x memory_mb)"})
    max_processes: int = field(default=32, metadata={"help": "processes/threads the program may run (RLIMIT_NPROC)"})
    max_file_mb: int = field(default=10, metadata={"help": "largest file the program may write, MiB (RLIMIT_FSIZE)"})
    max_output_bytes: int = field(default=1_000_000, metadata={"help": "bytes kept per stream; more kills the program"})
    max_open_files: int = field(default=256, metadata={"help": "open file descriptors per process (RLIMIT_NOFILE)"})
    max_disk_mb: int = field(default=64, metadata={"help": "size of the tmpfs holding all writable places (root-ns)"})

    def __post_init__(self):
        for name in ("cpu_seconds", "wall_seconds", "memory_mb", "max_processes", "max_file_mb",
                     "max_output_bytes", "max_open_files", "max_disk_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SandboxLimits.{name} must be a positive number, got {value!r}")
        total = self.total_memory_mb
        if total is not None and (isinstance(total, bool) or not isinstance(total, (int, float)) or not total > 0):
            raise ValueError(f"SandboxLimits.total_memory_mb must be a positive number or None, got {total!r}")

    @property
    def needs_memory_cgroup(self) -> bool:
        """Whether a per-run cgroup is worth its cost (about 10 ms a run, measured with eval/bench_sandbox.py):
        with one process (``max_processes=1``, the scoring runs) ``RLIMIT_AS`` already bounds the total, so a
        cgroup is made only for programs that may start more, or when ``total_memory_mb`` is given."""
        return self.total_memory_mb is not None or self.max_processes > 1

    @property
    def total_memory_bytes(self) -> int:
        """The bound on all the program's processes together, in bytes (``total_memory_mb`` or 2 x ``memory_mb``)."""
        mb = self.total_memory_mb if self.total_memory_mb is not None else 2 * self.memory_mb
        return int(mb * 1024 * 1024)


@dataclass
class SandboxResult:
    """What happened to one sandboxed program.

    Args:
        status: ``"ok"`` (exit 0), ``"error"`` (non-zero exit), ``"timeout"`` (wall or CPU limit),
            ``"killed"`` (died by a signal, or killed for going over ``total_memory_mb``: then
            :attr:`detail` starts "memory limit"), ``"output_limit"`` (wrote more than allowed; killed),
            ``"setup_error"`` (the sandbox itself could not start; no user code ran).
        returncode: Exit code, negative for a signal (``None`` if it never started).
        stdout: Captured standard output (UTF-8, undecodable bytes replaced), at most the cap.
        stderr: Captured standard error, same rules.
        duration: Wall-clock seconds.
        truncated: True when output was cut at ``max_output_bytes``.
        detail: A short human-readable reason for a non-``ok`` status.
        values: In calls mode (``run_python(..., calls=...)``), one decoded result per call
            (plain data, or a ``CallFailed``); ``None`` when the results did not come back whole.

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
    values: list | None = None

    @property
    def passed(self) -> bool:
        """True when the program ran to completion and exited 0."""
        return self.status == "ok" and self.returncode == 0
