"""The docs stay true: the config reference is what the config classes say now, every relative link in the
README, docs/ and eval/results/README.md reaches a file, and the README stays a front door (under 150 lines)."""

import re
from pathlib import Path
from urllib.parse import unquote

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINKED = [*PAGES, ROOT / "eval" / "results" / "README.md"]  # pages whose relative links are checked
# [text](target) and [text](target "title"); images too. Code spans and fenced blocks are dropped first.
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^```.*?^```", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")


def test_config_reference_is_current():
    from lbt_dspy.config_docs import DEFAULT_OUT, render

    page = ROOT / "docs" / "config-reference.md"
    assert DEFAULT_OUT == page
    assert page.is_file() and page.read_text(encoding="utf-8") == render(), \
        "docs/config-reference.md is stale: run `make docs`"


def test_config_reference_covers_every_config_class_and_key():
    """Each config class has its table, and each of its fields a row with a help text."""
    from lbt_dspy.config import M1Config
    from lbt_dspy.config_docs import _fields, _sections

    text = (ROOT / "docs" / "config-reference.md").read_text(encoding="utf-8")
    classes = [cls for _, cls, _, _ in _sections()]
    assert M1Config in classes and {"M3Config", "LbTOptimizerConfig", "PairConfig", "M2TrainConfig"} <= {
        c.__name__ for c in classes}
    for _, cls, _, own_only in _sections():
        for f in _fields(cls, own_only):
            row = re.search(rf"^\| `{f.name}` \|.*\| (.+) \|$", text, re.M)
            assert row, f"{cls.__name__}.{f.name} has no row in docs/config-reference.md"
            assert f.metadata.get("help"), f"{cls.__name__}.{f.name} has no help text"


def _links(page: Path) -> list[str]:
    text = CODE_SPAN.sub("", FENCE.sub("", page.read_text(encoding="utf-8")))
    return LINK.findall(text)


def test_the_pages_have_links():
    assert len(_links(ROOT / "README.md")) >= 10  # the "Read on" list at least: the pattern finds them


@pytest.mark.parametrize("page", LINKED, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_points_to_an_existing_file(page):
    broken = []
    for target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I) or target.startswith("#"):
            continue  # https:, mailto:, an anchor in the same page
        path = unquote(target.split("#", 1)[0])
        if not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)} links to files that do not exist: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    links = {Path(t.split("#", 1)[0]).name for t in _links(ROOT / "README.md")}
    unlinked = sorted(p.name for p in PAGES[1:] if p.name not in links)
    assert not unlinked, f"README.md's 'Read on' list misses {unlinked}"


def test_readme_is_under_150_lines():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n < 150, f"README.md has {n} lines; reference and results go to docs/ (the README is the front door)"
