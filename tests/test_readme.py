"""The README's and docs' promises run: their Python examples (the README's, and docs/usage.md's Python API
block, against the scripted server), and every `lbt` command, config file, benchmark script and docs page
they name exist."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from fake_openai import FakeOpenAI

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
USAGE = (ROOT / "docs" / "usage.md").read_text()
# The README and every docs page: what they name must exist.
PAGES = {"README.md": README, **{f"docs/{p.name}": p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}}
# A repository path written out in a page (from the repository root).
NAMED_FILE = re.compile(r"\b((?:configs|eval|data|programs|tests|lbt_dspy|docs)/[\w/.-]*\w)")


def _run_block(block: str, source: str, monkeypatch) -> tuple[dict, set, int]:
    """Run a Python block, as written, against the scripted server: its ``embedded`` model entries are pointed at
    the server (the real completions prefill, rendered with the embedded model's tokenizer). Returns the block's
    globals, the request paths and the number of requests."""
    from lbt_dspy.models.embedded import checkpoint_path
    from lbt_dspy.models.pool import ModelEntry, model_types

    with FakeOpenAI() as srv:
        def scripted_embedded(pool, sample_kwargs, name="smollm2-135m"):
            return ModelEntry(name, "fake", srv.api_base, None, "completions", str(checkpoint_path()))

        monkeypatch.setitem(model_types._table, "embedded", scripted_embedded)
        scope: dict = {}
        exec(compile(block, source, "exec"), scope)
        return scope, {r["path"] for r in srv.requests}, len(srv.requests)


def test_readme_example_runs(monkeypatch):
    """The README's one Python block (M1 as a DSPy module) runs as written and M1 picks among its 4 pairs."""
    blocks = re.findall(r"```python\n(.*?)```", README, re.S)
    assert len(blocks) == 1, "the README has one Python example; the others live in docs/usage.md"
    scope, paths, n = _run_block(blocks[0], "README.md", monkeypatch)
    assert paths == {"/v1/completions"}  # the prefill is continued, not dropped
    pred = scope["pred"]
    # 4 pairs, each examined on 3 problems; two pairs the scripted teacher wrote alike have the same exam prompts,
    # which DSPy's cache answers once
    assert n >= 4 + 3 * len({(p.rationale, p.answer) for p in pred.pairs})
    assert len(pred.pairs) == 4 and pred.answer in {p.answer for p in pred.pairs}
    assert all(0.0 <= p.lbt_score <= 1.0 and len(p.exam["smollm2-135m"]["scores"]) == 3 for p in pred.pairs)


def test_python_api_example_runs(monkeypatch):
    """docs/usage.md's Python API block, as written, against the scripted server."""
    block = re.search(r"## Python API \(DSPy style\)\n\n```python\n(.*?)```", USAGE, re.S).group(1)
    scope, paths, n = _run_block(block, "docs/usage.md", monkeypatch)
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
    for text in PAGES.values():
        for m in re.finditer(r"(?:^|`)lbt ([a-z0-9]+)(?: ([a-z]+))?", text, re.M):
            sub = m.group(1)
            cmds.add((sub, m.group(2)) if sub == "m2" and m.group(2) else (sub,))
    return cmds


@pytest.mark.parametrize("cmd", sorted(_lbt_commands()), ids=" ".join)
def test_every_lbt_command_in_the_readme_and_docs_exists(cmd):
    r = subprocess.run([sys.executable, "-m", "lbt_dspy.cli", *cmd, "--help"], capture_output=True, text=True,
                       cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert r.returncode == 0, r.stderr[-500:]


@pytest.mark.parametrize("page", sorted(PAGES))
def test_every_file_the_readme_and_docs_name_exists(page):
    """Paths written out in a page (`configs/...`, `eval/...`, `docs/...`: from the repository root) exist."""
    names = set(NAMED_FILE.findall(PAGES[page]))
    missing = sorted(n for n in names if not (ROOT / n).exists())
    assert not missing, f"{page} names files that do not exist: {missing}"


def test_the_readme_names_many_files():
    """The pattern above finds the README's files (it would find none if the README's style changed)."""
    assert len(set(NAMED_FILE.findall(README))) > 10
