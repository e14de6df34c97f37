"""The docs' cross-references: a relative link in a Markdown file names a file that exists, and a
reference such as `(docs/training.md, "A learned temporal refiner")` in code, configs or docs names
a section of that file (a heading, or a paragraph's bold lead-in), and so does a doc's reference to
its own `section "Title"` or `"Title", above`. Sections get renamed as the
docs grow; a reference to a title that is gone sends a reader searching for nothing."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
MARKDOWN_LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE_BLOCK = re.compile(r"```.*?```", re.S)
# "docs/training.md, "Title"" (or training.md's), across a line break and a comment's "#".
SECTION_REFERENCE = re.compile(r"\b((?:docs/)?[a-z_]+\.md),\s*[\"“]([^\"”]{3,90})[\"”]")
# Inside a doc: its section "Title", or "Title", above (below).
IN_DOC_REFERENCE = re.compile(r"\bsections? [\"“]([^\"”]{3,90})[\"”]|[\"“]([^\"”]{3,90})[\"”],? (?:above|below)\b")
LINE_BREAK = re.compile(r"\s*\n\s*(?:#|//|\*|>)?\s*")
HEADING = re.compile(r"^#+\s*(.+?)\s*$", re.M)
BOLD_LEAD = re.compile(r"^(?:[-*]\s+|\d+\.\s+)?\*\*(.+?)\*\*", re.M)
TEXT_SUFFIXES = (".md", ".py", ".yaml", ".sh", ".cs", ".c", ".toml")


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout: the tracked files are not known")
    # This file's own examples are not references.
    return [ROOT / name for name in listed.stdout.split()
            if name.endswith(TEXT_SUFFIXES) and ROOT / name != Path(__file__)]


def _markdown_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def _prose(doc: Path) -> str:
    """The doc without its code blocks, whose lines are neither headings nor links."""
    return CODE_BLOCK.sub("", doc.read_text())


def _sections(doc: Path) -> list[str]:
    text = _prose(doc)
    return [title.lower() for title in HEADING.findall(text) + BOLD_LEAD.findall(text)]


def _anchors(doc: Path) -> set[str]:
    """GitHub's anchors for the doc's headings: lower case, punctuation dropped, spaces as
    hyphens, a repeated one numbered."""
    anchors: set[str] = set()
    for title in HEADING.findall(_prose(doc)):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        anchor, n = slug, 0
        while anchor in anchors:
            n += 1
            anchor = f"{slug}-{n}"
        anchors.add(anchor)
    return anchors


def test_relative_links_name_files_and_headings_that_exist() -> None:
    missing = []
    for doc in _markdown_files():
        for target in MARKDOWN_LINK.findall(_prose(doc)):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            linked = doc.parent / path if path else doc
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in _anchors(linked)):
                missing.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not missing


def test_section_references_name_a_section_of_their_doc() -> None:
    docs = {doc.name: doc for doc in _markdown_files() if doc.parent == ROOT / "docs"}
    sections = {name: _sections(doc) for name, doc in docs.items()}
    checked, unresolved = 0, []
    for path in _tracked_text_files():
        text = LINE_BREAK.sub(" ", path.read_text(errors="replace"))
        for doc, title in SECTION_REFERENCE.findall(text):
            name = Path(doc).name
            if name not in sections:
                continue
            checked += 1
            if not any(title.lower() in section for section in sections[name]):
                unresolved.append(f'{path.relative_to(ROOT)}: {doc}, "{title}"')
    assert checked > 50          # the pattern still finds the references the code and docs make
    assert not unresolved


def test_a_docs_references_to_its_own_sections_name_one() -> None:
    checked, unresolved = 0, []
    for doc in _markdown_files():
        sections = _sections(doc)
        for named, placed in IN_DOC_REFERENCE.findall(LINE_BREAK.sub(" ", doc.read_text())):
            title = named or placed
            checked += 1
            if not any(title.lower() in section for section in sections):
                unresolved.append(f'{doc.relative_to(ROOT)}: "{title}"')
    assert checked > 10
    assert not unresolved


def test_the_section_check_finds_a_missing_title() -> None:
    text = LINE_BREAK.sub(" ", 'see (docs/training.md, "A section\n    # that never was")')
    [(doc, title)] = SECTION_REFERENCE.findall(text)
    assert (doc, title) == ("docs/training.md", "A section that never was")
    assert not any(title.lower() in s for s in _sections(ROOT / "docs" / "training.md"))
