"""Every relative link and image in README.md and docs/*.md points at a file that exists, and every
``#anchor`` at a heading of its page (GitHub's slugs); the front page links every docs page."""
from __future__ import annotations

import re
import unicodedata
from pathlib import Path

from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")   # [text](target "title"), ![alt](…)
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)")                  # [name]: target
IMG_SRC = re.compile(r"<img\s[^>]*src=\"([^\"]+)\"")
SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")                               # http:, https:, mailto: …


def prose_lines(text: str, blank_inline_code: bool = True) -> list[str]:
    """The page's lines outside code: fenced and indented blocks dropped, inline code blanked (a link in
    it is no link) unless ``blank_inline_code`` is false (a heading's code is part of its anchor)."""
    lines, fenced, previous_blank, in_indented = [], False, True, False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            lines.append("")
            continue
        indented = line.startswith(("    ", "\t")) and (previous_blank or in_indented)
        in_indented = indented or (in_indented and not line.strip())
        previous_blank = not line.strip()
        if blank_inline_code:
            line = re.sub(r"`+[^`]*`+", "", line)
        lines.append("" if fenced or indented else line)
    return lines


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation and symbols dropped, spaces to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    kept = "".join(c for c in text if c in " -_" or unicodedata.category(c)[0] in "LNM")
    return kept.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on ``page``; a repeated heading gets -1, -2 … as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for line in prose_lines(page.read_text(), blank_inline_code=False):
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def targets(page: Path) -> list[str]:
    found = []
    for line in prose_lines(page.read_text()):
        found += LINK.findall(line) + IMG_SRC.findall(line)
        reference = REFERENCE.match(line)
        if reference:
            found.append(reference.group(1))
    return found


def broken_links(page: Path) -> list[str]:
    """The relative links and images of ``page`` that point at no file, or at no heading of their page."""
    broken = []
    for target in targets(page):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            broken.append(f"{target} (no heading #{anchor} in {file.name})")
    return broken


def test_every_link_and_image_in_the_readme_and_docs_resolves():
    assert len(PAGES) > 1
    problems = {page.relative_to(REPO).as_posix(): broken_links(page) for page in PAGES}
    assert not any(problems.values()), {page: links for page, links in problems.items() if links}


def test_the_front_page_links_every_docs_page():
    linked = {(REPO / t.partition("#")[0]).resolve() for t in targets(REPO / "README.md") if not SCHEME.match(t)}
    unlinked = [p.name for p in PAGES[1:] if p.resolve() not in linked]
    assert not unlinked, f"README.md's Docs section does not link {unlinked}"


def test_a_broken_link_or_anchor_is_reported(tmp_path):
    (tmp_path / "other.md").write_text("# Other\n\n## Runs: the `summary.json` file — and more\n\n## Runs\n\n## Runs\n")
    (tmp_path / "figure.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Hello, world's end\n\n"
        "[fine](other.md) [fine](other.md#runs-the-summaryjson-file--and-more) [fine](other.md#runs-1)\n"
        "[fine](#hello-worlds-end) ![fine](figure.png) [web](https://example.org/x.md)\n"
        "[gone](missing.md) ![gone](missing.png) [no heading](other.md#nothing) [no heading](#nowhere)\n\n"
        "`[in code](code.md)` is code, and so is this block:\n\n    [indented](code.md)\n\n"
        "```\n[fenced](code.md)\n```\n\n[ref]: missing-ref.md\n")
    assert broken_links(page) == ["missing.md (no such file)", "missing.png (no such file)",
                                  "other.md#nothing (no heading #nothing in other.md)",
                                  "#nowhere (no heading #nowhere in page.md)", "missing-ref.md (no such file)"]


def test_slugs_are_githubs():
    assert slug("Reproduction: Table 1") == "reproduction-table-1"
    assert slug("The 100x240 row's BP and FA cells") == "the-100x240-rows-bp-and-fa-cells"
    assert slug('The conv net ("CONV tanh", Tables 2 and 3)') == "the-conv-net-conv-tanh-tables-2-and-3"
    assert slug("Stopping, killing and resuming") == "stopping-killing-and-resuming"
    assert slug("Table 1 — MNIST: ours vs Nøkland (2016)") == "table-1--mnist-ours-vs-nøkland-2016"
