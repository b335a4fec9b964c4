"""Math checks in worker processes (lbt_dspy/scoring/math_checks.py): the same verdicts as in process, hostile
answers scored, verdicts and parses cached, a dead or stuck worker replaced, no hang at exit or on Ctrl-C."""

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from lbt_dspy.scoring import math as math_scoring
from lbt_dspy.scoring import math_checks
from lbt_dspy.scoring import MathScorer
from lbt_dspy.scoring.math_checks import CheckWorkers, check_here

TRICKY = [
    ("\\frac{1}{2}", "0.5"), ("\\frac12", "1/2"), ("\\frac{2}{3}", "0.67"), ("2\\sqrt{3}", "\\sqrt{12}"),
    ("\\sqrt{2}", "2"), ("[2,5)", "[2, 5)"), ("[2,5)", "(2,5)"),
    ("\\left( 3, \\frac{\\pi}{2} \\right)", "(3,\\frac{\\pi}{2})"),
    ("(1,2)", "(2,1)"), ("90^\\circ", "90"), ("\\text{Evelyn}", "Evelyn"), ("\\text{(C)}", "C"), ("7", "7.0"),
    ("x^2+2x", "x(x+2)"), ("-\\frac{2}{3}", "-2/3"), ("\\frac{3}{4}", "\\dfrac{3}{4}"), ("5", "x = 5"),
    ("y = -2x", "y=-2x"), ("(2,\\infty)", "(2, \\infty)"), ("6+2i", "2i+6"), ("51.6 \\text{ cents}", "51.6"),
    ("\\{1, 2\\}", "\\{2, 1\\}"), ("10\\%", "10"), ("\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}", "(1, 2)"),
    ("0.333333", "0.3333333"), ("1000", "1,000"), ("\\frac{3}{4}", "garbage }{ \\frac{"), ("\\frac{3}{4}", "eight"),
]
HOSTILE = ["", " ", "}{", "\\frac{", "\x00\ufffd\ud800\u202e", "$$$$", "a" * 1_000_000, "((((" * 50,
           "1\n2\n[[Final Answer]]", "\\boxed{", "[\"json\", true]\n", "10^{10^{10}}"]


@pytest.fixture
def workers():
    with CheckWorkers(2) as pool:
        yield pool


def test_workers_give_the_in_process_verdicts(workers):
    here = [check_here(r, a) for r, a in TRICKY]
    assert [workers.check(r, a) for r, a in TRICKY] == here
    assert sum(here) > len(TRICKY) // 2  # most are equivalent forms, some are not: both kinds checked


def test_hostile_answers_are_scored_never_raise_nor_freeze():
    """From threads, as inside M1: in a thread math-verify has no timeout, and 10^{10^{10}} held the GIL for good
    (every thread of the process stopped); in a worker it times out (5 s) and scores 0."""
    math_checks.configure(2)
    try:
        t = time.monotonic()
        with ThreadPoolExecutor(4) as ex:
            scores = list(ex.map(lambda a: MathScorer().score(a, "\\frac{3}{4}"), HOSTILE))
        assert scores == [0.0] * len(HOSTILE)
        assert time.monotonic() - t < 60
    finally:
        math_checks.configure(None)


def test_answers_equivalent_caches_verdicts_and_parses(monkeypatch):
    math_scoring._checked.cache_clear()
    math_checks.parse.cache_clear()
    asked = []
    monkeypatch.setattr(math_checks, "check", lambda r, a: asked.append((r, a)) or check_here(r, a))
    for _ in range(3):
        assert math_scoring.answers_equivalent("\\frac{7}{9}", "\\dfrac{7}{9}")
        assert not math_scoring.answers_equivalent("\\frac{7}{9}", "\\frac{7}{8}")
    assert asked == [("\\frac{7}{9}", "\\dfrac{7}{9}"), ("\\frac{7}{9}", "\\frac{7}{8}")]  # one check per pair
    assert math_checks.parse.cache_info().misses == 3  # the reference parsed once for both answers


def test_integer_answers_start_no_worker():
    math_checks.configure(None)
    scorer = math_scoring.MathScorer()
    assert [scorer.score(a, "12") for a in ("12", "13", "-12", "012")] == [1.0, 0.0, 0.0, 1.0]
    assert math_checks._POOL is None


def test_without_workers_checks_run_in_process(monkeypatch):
    monkeypatch.setenv("LBT_CHECK_WORKERS", "0")
    math_checks.configure(None)
    try:
        assert math_checks.check("\\frac{1}{2}", "0.5")
        assert math_checks._POOL is None
    finally:
        math_checks.configure(None)


def test_a_dead_worker_is_replaced(workers, caplog):
    assert workers.check("\\frac{1}{2}", "0.5")
    (proc,) = workers._procs
    proc.kill()
    proc.wait()
    with caplog.at_level(logging.WARNING, logger="lbt_dspy"):
        assert workers.check("\\frac{1}{2}", "0.5")  # retried on a fresh worker
    assert "worker died" in caplog.text
    assert proc not in workers._procs and len(workers._procs) == 1


def test_a_worker_killed_mid_check_is_one_retry(workers, caplog):
    got = {}
    t = threading.Thread(target=lambda: got.setdefault("v", workers.check("\\frac{1}{3}", "0.3333333")))
    workers.check("1", "1.0")
    (proc,) = workers._procs
    with caplog.at_level(logging.WARNING, logger="lbt_dspy"):
        os.kill(proc.pid, signal.SIGSTOP)  # hold it mid-check, then kill it
        t.start()
        time.sleep(0.3)
        proc.kill()
        t.join(30)
    assert got == {"v": True}
    assert caplog.text.count("worker died") == 1


def test_a_stuck_check_is_killed_at_the_deadline(workers, monkeypatch, caplog):
    assert workers.check("\\frac{3}{4}", "0.75")  # a worker started (the deadline counts a start too)
    monkeypatch.setattr(math_checks, "DEADLINE_S", 0.5)  # less than math-verify's own 5 s timeout
    with caplog.at_level(logging.WARNING, logger="lbt_dspy"):
        assert workers.check("\\frac{3}{4}", "10^{10^{10}}") is False
    assert "ran past" in caplog.text and not workers._procs
    monkeypatch.setattr(math_checks, "DEADLINE_S", 60)
    assert workers.check("\\frac{3}{4}", "0.75")  # a fresh worker takes the next check


SCRIPT = textwrap.dedent("""
    import sys, threading
    from lbt_dspy.scoring.math_checks import check
    check("\\\\frac{1}{2}", "0.5")
    from lbt_dspy.scoring import math_checks
    print(" ".join(str(p.pid) for p in math_checks._POOL._procs), flush=True)
    if sys.argv[1] == "interrupt":  # every thread waits on a worker that is stuck on 10^{10^{10}} for 5 s
        for _ in range(4):
            threading.Thread(target=check, args=("1/3", "10^{10^{10}}"), daemon=True).start()
        print("busy", flush=True)
        threading.Event().wait()
""")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return open(f"/proc/{pid}/stat").read().split()[2] == "Z"


@pytest.mark.parametrize("how", ["exit", "interrupt"])
def test_no_hang_at_exit_or_on_ctrl_c(how):
    # The terminal's SIGINT, even when the suite runs from a background job (SIGINT ignored there, inherited)
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, how], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "LBT_CHECK_WORKERS": "2"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert pids
    if how == "interrupt":
        assert proc.stdout.readline().strip() == "busy"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
    t = time.monotonic()
    proc.wait(20)
    assert time.monotonic() - t < 10
    deadline = time.monotonic() + 10
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(p) for p in pids)


def test_no_worker_can_start_checks_run_in_process(monkeypatch, caplog):
    monkeypatch.setattr(math_checks.sys, "executable", "/nonexistent/python")
    math_checks.configure(2)
    try:
        with caplog.at_level(logging.WARNING, logger="lbt_dspy"):
            assert math_checks.check("\\frac{1}{2}", "0.5") and math_checks.check("\\frac{1}{3}", "0.3333333")
        assert caplog.text.count("cannot start a math-check worker") == 1 and math_checks._POOL is None
    finally:
        math_checks.configure(None)


def _math181_m1(api_base: str, tps: list[dict]):
    import lbt_dspy
    from lbt_dspy import FunctionalExamMaker, LbTScore, M1, Student, Teacher, TemplateAdapter
    from lbt_dspy.data import math181_dataset

    bank = math181_dataset(limit=40).exam_bank
    entry = {"model_type": "openai",
             "model_cfg": {"model": "fake", "api_base": api_base, "api_key_env": "FAKE_API_KEY"}}
    lm = lbt_dspy.lm(entry, temperature=0.7, max_tokens=64, cache=False)
    adapter = TemplateAdapter(stub_teaching_items=[])
    m1 = M1(Teacher(lm=lm, adapter=adapter, num_pairs=4),
            LbTScore([Student(lm=lm, adapter=adapter)], FunctionalExamMaker(bank, 3, 1), MathScorer()), num_threads=8)
    # Sorted: alike prompts (alike pairs' exams, the teacher's samples) reach the server, which varies its answers
    # to a prompt it saw before, in thread order; so what each pair got may differ, not what was answered and scored
    out = []
    for p in (m1(**tp) for tp in tps):
        exams = [c.exam["fake"] for c in p.pairs]
        out.append((p.answer, sorted(c.answer for c in p.pairs),
                    sorted(x for e in exams for x in zip(e["questions"], e["answers"], e["scores"]))))
    return out


def test_m1_on_math181_scores_alike_with_and_without_workers(monkeypatch):
    """One M1 (4 pairs x 3 exam problems) on LaTeX-answered math181 problems: through the workers (from M1's
    threads) and in process, the same exam answers get the same scores."""
    from fake_openai import FakeOpenAI, scripted_math

    from lbt_dspy.data import math181_dataset

    monkeypatch.setenv("FAKE_API_KEY", "x")
    data = math181_dataset(limit=40)
    tps = [tp for tp in data.teaching if not tp["answer"].isdigit()][:3]
    refs = {row["question"]: row["answer"] for row in data.teaching + data.exam_bank}
    runs = []
    for workers in (2, 0):
        math_checks.configure(workers)
        math_scoring._checked.cache_clear()
        try:
            with FakeOpenAI(answer=scripted_math(refs)) as srv:  # a fresh server: the same answers again
                runs.append(_math181_m1(srv.api_base, tps))
            assert (math_checks._POOL is not None) == (workers > 0)
        finally:
            math_checks.configure(None)
    assert [r[1:] for r in runs[0]] == [r[1:] for r in runs[1]]
    scores = [s for _, _, taken in runs[0] for _, _, s in taken]
    assert 0 < sum(scores) < len(scores)  # right and wrong answers both scored
