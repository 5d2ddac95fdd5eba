"""Code and docs cite only what is in the repository: facts live in docs/facts.md with their public sources.

No reference to a file outside the repository ("facts.md §N" of a design note) and no "issue N" of a
tracker a reader cannot see; every `facts.md#anchor` reference names a section that exists.
"""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCANNED = [REPO / "README.md", *(p for folder in ("netfwd", "docs", "tests", "scripts") for p in (REPO / folder).rglob("*")
                                  if p.is_file() and p.suffix in (".py", ".md", ".sh", "") and "__pycache__" not in p.parts)]
ISSUE = re.compile(r"\bissues? (?:#)?[0-9]+\b", re.IGNORECASE)  # "issue 12", "issue #3" (not owner/repo#N links)
SECTION = re.compile(r"facts\.md\s*§")
ANCHOR = re.compile(r"facts\.md#([a-z0-9-]+)")


def texts():
    for path in SCANNED:
        if path == Path(__file__).resolve():
            continue
        try:
            yield path, path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError):
            continue


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    return re.sub(r"[^a-z0-9 -]", "", heading.strip().lower()).replace(" ", "-")


def test_no_reference_outside_the_repository():
    found = [f"{path.relative_to(REPO)}:{text.count(chr(10), 0, m.start()) + 1}: {m.group(0)}"
             for path, text in texts() for pattern in (ISSUE, SECTION) for m in pattern.finditer(text)]
    assert found == []


def test_every_facts_anchor_exists():
    anchors = {slug(line[3:]) for line in (REPO / "docs" / "facts.md").read_text().splitlines() if line.startswith("## ")}
    cited = {(str(path.relative_to(REPO)), m.group(1)) for path, text in texts() for m in ANCHOR.finditer(text)}
    assert cited and {c for c in cited if c[1] not in anchors} == set()


def test_every_fact_has_a_public_source():
    """Each bullet of docs/facts.md carries at least one link (or names the repository test that shows it)."""
    text = (REPO / "docs" / "facts.md").read_text()
    bullets = re.split(r"\n- ", text.split("\n## ", 1)[1])[1:]
    assert bullets and all("<https://" in b or "<http://" in b or "](https://" in b for b in bullets), \
        [b[:60] for b in bullets if "http" not in b]
