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
    """The README's Python API block, as written, against the scripted server: its ``embedded`` model entry
    is pointed at the server (the real completions prefill, rendered with the embedded model's tokenizer)."""
    from lbt_dspy.models.embedded import checkpoint_path
    from lbt_dspy.models.lm import ModelEntry, model_types

    block = re.search(r"## Python API \(DSPy style\)\n\n```python\n(.*?)```", README, re.S).group(1)
    with FakeOpenAI() as srv:
        def scripted_embedded(pool, sample_kwargs, name="smollm2-135m"):
            return ModelEntry(name, "fake", srv.api_base, None, "completions", str(checkpoint_path()))

        monkeypatch.setitem(model_types._table, "embedded", scripted_embedded)
        scope: dict = {}
        exec(compile(block, "README.md", "exec"), scope)
        paths = {r["path"] for r in srv.requests}
        n = len(srv.requests)
    assert paths == {"/v1/completions"}  # the prefill is continued, not dropped
    assert n > 3 * 4  # every problem taught and examined (what repeats comes from DSPy's cache)
    pred = scope["pred"]
    assert len(pred.candidates) == 4 and pred.answer in {c.answer for c in pred.candidates}
    assert all(0.0 <= c.lbt_score <= 1.0 and len(c.exam["smollm2-135m"]["scores"]) == 3 for c in pred.candidates)
    assert len(scope["preds"]) == 2 and all(len(p.candidates) == 4 for p in scope["preds"])
    assert len(scope["tuned"].solve.demos) == 1  # the scripted teacher teaches well: its solution is kept
    assert scope["tuned"].solve.demos[0]["answer"] == scope["data"].teaching[0]["answer"]


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
