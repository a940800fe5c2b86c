"""The documentation stays current and whole: the config reference generated from the code (docs/configuration.md)
matches the schema, and every relative link of README.md and the docs pages reaches a file, an image or a heading
that exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jaxrl_dist.config import reference

ROOT = reference.PAGE.parents[1]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", ROOT / "experiments" / "README.md", *sorted(DOCS.glob("*.md"))]
README_MAX_LINES = 250  # the README is a front page; the rest lives in docs/

_FENCE = re.compile(r"^(```|~~~).*?^\1", re.DOTALL | re.MULTILINE)
_CODE_SPAN = re.compile(r"`[^`\n]*`")
_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_HEADING = re.compile(r"^#{1,6}\s+(.+?)\s*#*\s*$", re.MULTILINE)


def test_config_reference_is_current() -> None:
    """docs/configuration.md is what `python -m jaxrl_dist.config.reference` writes from the schema's field docs;
    after a change to a field, rerun that command."""
    assert reference.PAGE.is_file(), "docs/configuration.md is missing: run python -m jaxrl_dist.config.reference"
    assert reference.PAGE.read_text() == reference.render(), (
        "docs/configuration.md is stale: run python -m jaxrl_dist.config.reference")


def test_every_field_is_documented() -> None:
    rows = [line for line in reference.render().splitlines() if line.startswith("| `")]
    assert rows and all(not line.rstrip().endswith("|  |") for line in rows), [r for r in rows if r.endswith("|  |")]


def _prose(text: str) -> str:
    """`text` without fenced code blocks and code spans, whose brackets are no links."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: the text without markup, lower case, punctuation dropped, spaces as `-`."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link keeps its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings, with GitHub's `-1`, `-2` suffixes for repeated ones."""
    seen: dict[str, int] = {}
    out = set()
    for heading in _HEADING.findall(_FENCE.sub("", page.read_text())):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


def broken_links(page: Path) -> list[str]:
    """The relative links of `page` whose file, folder or `#heading` does not exist (web and mail links are not
    followed)."""
    broken = []
    for target in _LINK.findall(_prose(page.read_text())):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # https:, mailto:, ...
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            broken.append(f"{target} (no {_shown(dest)})")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target} (no heading '#{anchor}' in {_shown(dest)})")
    return broken


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def test_slug_follows_github() -> None:
    assert slug("Weights & Biases") == "weights--biases"
    assert slug("Multi-process runs (`jax.distributed`)") == "multi-process-runs-jaxdistributed"
    assert slug("Derived sizes (the plan)") == "derived-sizes-the-plan"
    assert slug("Configs shipped, in detail") == "configs-shipped-in-detail"


def test_link_checker_finds_a_broken_link(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    (tmp_path / "there.png").write_bytes(b"")
    page.write_text("# Title\n\n## A part\n\n![ok](there.png) [ok](#a-part) [web](https://example.org/x)\n"
                    "`[code](missing.md)`\n```\n[fenced](missing.md)\n```\n"
                    "![gone](gone.png) [gone](page.md#no-such-part)\n")
    assert [b.split(" (")[0] for b in broken_links(page)] == ["gone.png", "page.md#no-such-part"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    """Every image, file and heading that README.md and the docs pages link to exists (paths are relative to the
    page: `../jaxrl_dist/...` from docs/)."""
    assert not broken_links(page), f"{page.relative_to(ROOT)}: broken links: {broken_links(page)}"


def test_readme_is_a_front_page() -> None:
    """The README stays short, and its docs index links every page of docs/."""
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < README_MAX_LINES, "README.md grew long: move detail into a docs/ page"
    unlinked = [p.name for p in DOCS.glob("*.md") if f"(docs/{p.name}" not in readme]
    assert not unlinked, f"docs pages missing from the README's index: {unlinked}"


@pytest.mark.parametrize("page", [p for p in sorted(DOCS.glob("*.md")) if p != reference.PAGE], ids=lambda p: p.name)
def test_docs_pages_open_with_a_summary_and_a_way_back(page: Path) -> None:
    """A page opens with its title, then one line that says what it holds and links back to the README."""
    lines = [line for line in page.read_text().splitlines() if line.strip()]
    assert lines[0].startswith("# "), f"{page.name} does not start with a title"
    assert "](../README.md" in lines[1], f"{page.name}: the line after the title should link back to the README"
