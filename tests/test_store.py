"""The run directory never loses data: readers never write, one writer per directory (an flock naming its
pid), torn last lines are set aside rather than deleted, every bad line is a one-line error naming
file:line with nothing changed, and environment faults (full disk, read-only, a file in the path) are one
line with the right exit code."""

import errno
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from lbt_dspy import store as store_mod
from lbt_dspy.errors import LbtEnvironmentError, LbtError
from lbt_dspy.store import RunStore

CFG = {"run": "test"}
TEACH = ("tp", ("pair", "sample"), "answer", "score")


def rec(i, **over):
    return {"key": f"tp0/{i}", "tp": "tp0", "sample": i, "answer": str(i), "score": 1.0, **over}


def snapshot(path):
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def make_run(tmp_path, n=12):
    run = tmp_path / "run"
    with RunStore(run, CFG) as st:
        for i in range(n):
            st.append("teach", rec(i))
    return run


# --- readers never modify a run ------------------------------------------------------------------
@pytest.mark.parametrize("damage, line, needle", [
    (lambda lines: ["{not json"] + lines[1:], 1, "not valid JSON"),                  # a damaged first line
    (lambda lines: lines[:5] + [""] + lines[5:], 6, "a blank line"),                   # a blank line mid-file
    (lambda lines: lines[:3] + ['[1, 2]'] + lines[3:], 4, "expected a JSON object"),
    (lambda lines: lines[:2] + [json.dumps({"tp": "tp0", "sample": 9})] + lines[2:], 3, "no 'key'"),
    (lambda lines: lines + [json.dumps({"key": "x", "tp": "tp0", "sample": 9, "answer": "1"})], 13, "no 'score'"),
    (lambda lines: lines + [json.dumps(rec(20, score="1.0"))], 13, "'score' is str"),
    (lambda lines: lines + [json.dumps(rec(20, score=True))], 13, "'score' is bool"),
    (lambda lines: lines + [json.dumps(rec(20, sample="3"))], 13, "'sample' is str"),
    (lambda lines: lines + [json.dumps(rec(20, tp=None))], 13, "'tp' is NoneType"),
    (lambda lines: lines + ['{"key": "tp0/20", "tp": "tp0", "sample": 20, "answer": "1", "score": NaN}'], 13, "NaN"),
    (lambda lines: lines + ['{"key": "tp0/20", "tp": "tp0", "sample": 20, "answer": "1", "score": Infinity}'], 13,
     "Infinity"),
    (lambda lines: lines + ['{"key": 7, "score": 1}'], 13, "'key' is int"),
    (lambda lines: lines + ["[" * 100000], 13, "not valid JSON"),
])
def test_a_bad_line_is_an_error_naming_file_and_line_and_nothing_changes(tmp_path, damage, line, needle):
    run = make_run(tmp_path)
    file = run / "teach.jsonl"
    file.write_text("\n".join(damage(file.read_text().splitlines())) + "\n")
    before = snapshot(run)
    for store in (RunStore(run), RunStore(run, CFG)):  # a reader, and the writer on resume
        with pytest.raises(LbtError) as err:
            store.load("teach", required=TEACH)
        store.close()
        assert f"{file}:{line}: " in str(err.value) and needle in str(err.value), err.value
        assert err.value.exit_code == 2 and "\n" not in str(err.value)
    after = snapshot(run)
    assert after.pop(".lock", None) is not None  # the writer's lock file; nothing else was touched
    assert after == {k: v for k, v in before.items() if k != ".lock"}


def test_a_torn_last_line_is_skipped_by_readers_and_set_aside_by_the_writer(tmp_path):
    run = make_run(tmp_path, n=3)
    file = run / "teach.jsonl"
    with open(file, "ab") as fh:
        fh.write(b'{"key": "tp0/3", "tp": "tp0", "sam')  # killed mid-write
    before = file.read_bytes()
    assert sorted(RunStore(run).load("teach", required=TEACH)) == ["tp0/0", "tp0/1", "tp0/2"]
    assert file.read_bytes() == before  # a reader leaves it (the writer may be mid-line right now)
    with RunStore(run, CFG) as st:
        assert len(st.load("teach")) == 3
        st.append("teach", rec(3))
    assert (run / "teach.jsonl.torn").read_bytes() == b'{"key": "tp0/3", "tp": "tp0", "sam\n'  # kept, not deleted
    assert [json.loads(x)["key"] for x in file.read_text().splitlines()] == ["tp0/0", "tp0/1", "tp0/2", "tp0/3"]


def test_the_writer_sets_a_torn_line_aside_before_its_first_append_even_without_a_load(tmp_path):
    run = make_run(tmp_path, n=1)
    with open(run / "teach.jsonl", "ab") as fh:
        fh.write(b'{"key": "tp')
    with RunStore(run, CFG) as st:
        st.append("teach", rec(1))  # not glued onto the torn line
    assert len(RunStore(run).load("teach", required=TEACH)) == 2
    assert (run / "teach.jsonl.torn").exists()


def test_a_reader_creates_nothing(tmp_path):
    missing = tmp_path / "nope"
    st = RunStore(missing)
    assert st.load("teach") == {} and not missing.exists()
    with pytest.raises(LbtError, match="not a run directory"):
        st.read_config()
    with pytest.raises(LbtError, match="opened for reading"):
        RunStore(make_run(tmp_path)).append("teach", rec(99))


# --- one writer per run directory ----------------------------------------------------------------
HOLD = textwrap.dedent("""
    import sys, time
    from lbt_dspy.store import RunStore
    st = RunStore(sys.argv[1], {"run": "test"})
    print("locked", flush=True)
    time.sleep(60)
""")


def _holder(run):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holders_pid(tmp_path):
    run = make_run(tmp_path)
    proc = _holder(run)
    try:
        with pytest.raises(LbtError) as err:
            RunStore(run, CFG)
        assert f"in use by another lbt process (pid {proc.pid})" in str(err.value) and err.value.exit_code == 2
        assert len(RunStore(run).load("teach")) == 12  # readers still read
    finally:
        proc.kill()
        proc.wait()


def test_a_stale_lock_of_a_killed_writer_does_not_block(tmp_path):
    run = make_run(tmp_path)
    proc = _holder(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (run / ".lock").read_text().strip() == str(proc.pid)  # the file stays; the kernel dropped the flock
    with RunStore(run, CFG) as st:
        st.append("teach", rec(12))
    assert (run / ".lock").read_text().strip() == str(os.getpid())


def test_a_new_writer_in_the_same_process_takes_over_and_the_old_one_writes_nothing(tmp_path):
    run = make_run(tmp_path)
    old = RunStore(run, CFG)
    new = RunStore(run, CFG)
    with pytest.raises(LbtError, match="closed"):
        old.append("teach", rec(50))
    new.append("teach", rec(51))
    new.close()
    assert "tp0/50" not in RunStore(run).load("teach")


# --- environment faults ----------------------------------------------------------------------------
def test_disk_full_is_one_line_with_a_rerun_hint_and_the_writer_stops(tmp_path, monkeypatch):
    run = make_run(tmp_path, n=2)
    calls = []

    def full(fd, data):
        calls.append(data)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(store_mod, "_write", full)
    st = RunStore(run, CFG)
    with pytest.raises(LbtEnvironmentError) as err:
        st.append("teach", rec(2))
    msg = str(err.value)
    assert "no space left on device" in msg and "rerun the same command" in msg and err.value.exit_code == 1
    monkeypatch.undo()
    with pytest.raises(LbtEnvironmentError):  # no later line may be glued onto a torn one
        st.append("teach", rec(3))
    assert len(calls) == 1
    st.close()


def test_a_short_write_leaves_a_torn_line_that_the_rerun_sets_aside(tmp_path, monkeypatch):
    run = make_run(tmp_path, n=2)
    monkeypatch.setattr(store_mod, "_write", lambda fd, data: os.write(fd, data[: len(data) // 2]))
    st = RunStore(run, CFG)
    with pytest.raises(LbtEnvironmentError, match="no space left"):
        st.append("teach", rec(2))
    st.close()
    monkeypatch.undo()
    assert len(RunStore(run).load("teach", required=TEACH)) == 2  # readers skip the torn half line
    with RunStore(run, CFG) as st:
        st.append("teach", rec(2))
    assert len(RunStore(run).load("teach", required=TEACH)) == 3
    assert (run / "teach.jsonl.torn").read_bytes().startswith(b'{"key": "tp0/2"')


def _mount_tmpfs(path, opts):
    if os.geteuid() != 0:
        return False
    path.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True).returncode == 0


def test_a_real_full_disk(tmp_path):
    """A 64 KiB tmpfs (needs root and mount; skipped elsewhere, where the fault-hook tests above stand in)."""
    mnt = tmp_path / "tiny"
    if not _mount_tmpfs(mnt, "size=64k"):
        pytest.skip("cannot mount a tmpfs here")
    try:
        st = RunStore(mnt / "run", CFG)
        with pytest.raises(LbtEnvironmentError) as err:
            for i in range(10000):
                st.append("teach", rec(i, rationale="x" * 500))
        assert "no space left on device" in str(err.value) and "rerun" in str(err.value)
        st.close()
        kept = RunStore(mnt / "run").load("teach", required=TEACH)  # every whole line is readable
        assert 10 < len(kept) < 10000
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_a_read_only_output_directory(tmp_path):
    ro = tmp_path / "ro"
    mounted = _mount_tmpfs(ro, "ro,size=64k")
    if not mounted:
        if os.geteuid() == 0:
            pytest.skip("root ignores file modes and no read-only mount is possible here")
        ro.mkdir()
        ro.chmod(0o555)
    try:
        with pytest.raises(LbtEnvironmentError) as err:
            RunStore(ro / "run", CFG)
        assert ("read-only file system" in str(err.value) or "permission denied" in str(err.value))
        assert err.value.exit_code == 1 and str(ro / "run") in str(err.value)
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=False)


def test_an_output_path_whose_parent_is_a_file(tmp_path):
    (tmp_path / "file.txt").write_text("precious")
    with pytest.raises(LbtError) as err:
        RunStore(tmp_path / "file.txt" / "run", CFG)
    assert "a parent of this path is a file" in str(err.value) and err.value.exit_code == 2
    assert (tmp_path / "file.txt").read_text() == "precious"


# --- hostile values ----------------------------------------------------------------------------------
def test_a_lone_surrogate_is_written_escaped_and_loads_back(tmp_path):
    key = "tp\ud800x/0"
    with RunStore(tmp_path / "run", CFG) as st:
        st.append("teach", rec(0, key=key, tp="tp\ud800x", answer="caf\u00e9"))
        st.write_json("summary.json", {"tp": "tp\ud800x"})
        st.write_text("report.md", "| tp\ud800x |")
    loaded = RunStore(tmp_path / "run").load("teach", required=TEACH)
    assert list(loaded) == [key] and loaded[key]["answer"] == "caf\u00e9"
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tp"] == "tp\ud800x"
    assert "\\ud800" in (tmp_path / "run" / "report.md").read_text()


def test_nan_is_never_recorded(tmp_path):
    with RunStore(tmp_path / "run", CFG) as st:
        with pytest.raises(LbtError, match="NaN"):
            st.append("teach", rec(0, score=math.nan))
    assert not (tmp_path / "run" / "teach.jsonl").exists()


@pytest.mark.parametrize("text, needle", [
    ("num_rationales: [1, 2\n", "config.yaml:2: the run's config.yaml is broken (invalid YAML"),
    ("- a\n- b\n", "config.yaml: the run's config.yaml is not a mapping"),
    (b"\xff\xfe\x00", "config.yaml: the run's config.yaml is not UTF-8"),
])
def test_a_broken_saved_config_is_one_line_and_nothing_changes(tmp_path, text, needle):
    run = make_run(tmp_path)
    (run / "config.yaml").write_bytes(text if isinstance(text, bytes) else text.encode())
    before = snapshot(run)
    for make in (lambda: RunStore(run).read_config(), lambda: RunStore(run, CFG)):
        with pytest.raises(LbtError) as err:
            make()
        assert needle in str(err.value) and err.value.exit_code == 2
    assert snapshot(run) == before


def test_lock_is_released_when_a_writer_closes(tmp_path):
    run = make_run(tmp_path)
    proc = _holder(run)
    proc.send_signal(signal.SIGTERM)
    proc.wait()
    t0 = time.monotonic()
    RunStore(run, CFG).close()
    assert time.monotonic() - t0 < 1
