"""The README's promises run: its Python API example (against the scripted server) and every `lbt`
command, config file and benchmark script it names exist."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


def test_python_api_example_runs(monkeypatch):
    block = re.search(r"## Python API \(DSPy style\)\n\n```python\n(.*?)```", README, re.S).group(1)
    with FakeOpenAI() as srv:
        monkeypatch.setenv("OPENAI_BASE_URL", srv.api_base)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test-readme")
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
        assert srv.requests, "the example reached no server"
    pred = scope["pred"]
    assert len(pred.candidates) == 8 and pred.answer is not None
    assert all(0.0 <= c.lbt_score <= 1.0 for c in pred.candidates)


def _lbt_commands() -> set[tuple[str, ...]]:
    cmds = set()
    for m in re.finditer(r"(?:^|`)lbt ([a-z0-9]+)(?: ([a-z]+))?", README, re.M):
        sub = m.group(1)
        cmds.add((sub, m.group(2)) if sub == "m2" and m.group(2) else (sub,))
    return cmds


@pytest.mark.parametrize("cmd", sorted(_lbt_commands()), ids=" ".join)
def test_every_lbt_command_in_the_readme_exists(cmd):
    r = subprocess.run([sys.executable, "-m", "lbt_dspy.cli", *cmd, "--help"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-500:]


def test_every_file_the_readme_names_exists():
    names = set(re.findall(r"\b((?:configs|eval|data|programs|tests|lbt_dspy)/[\w/.-]*\w)", README))
    assert len(names) > 10
    missing = sorted(n for n in names if not (ROOT / n).exists())
    assert not missing, f"README names files that do not exist: {missing}"
