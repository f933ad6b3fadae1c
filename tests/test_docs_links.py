"""The documentation holds together: every relative link in README.md, workflows/README.md and docs/**/*.md
resolves (file and, for markdown targets, heading anchor), the README stays a quick start (no paragraph over
150 words), the docs pages keep short paragraphs, and no page points outside the repository."""
from __future__ import annotations

import re
import sys
import unicodedata
from pathlib import Path
from typing import Dict, Iterator, List, Set, Tuple

import pytest

ROOT = Path(__file__).resolve().parents[1]
# docs/_incoming/ holds drafts waiting to be placed into the pages; they are not part of the published docs.
INCOMING = ROOT / "docs" / "_incoming"
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
CODE_SPAN = re.compile(r"`+[^`]*`+")
OUTSIDE = ("../shared", "shared/notes", "/work/", "notes §", "reference notes", "comfyui notes", "stack notes",
           "peers notes", "datasets notes", "bigjob", "cpujob")
README_MAX_WORDS = 150
DOCS_MAX_WORDS = 125


def doc_files() -> List[Path]:
    files = [ROOT / "README.md", ROOT / "workflows" / "README.md"]
    files += sorted(p for p in (ROOT / "docs").rglob("*.md") if INCOMING not in p.parents)
    return [p for p in files if p.exists()]


def prose_lines(text: str) -> Iterator[Tuple[int, str]]:
    """(line number, line) outside fenced code blocks."""
    fence = False
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if not fence:
            yield i, line


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = heading.strip().lower()
    out = []
    for ch in text:
        if ch in " -_" or unicodedata.category(ch)[0] in "LN":
            out.append("-" if ch == " " else ch)
    return "".join(out)


def anchors(path: Path) -> Set[str]:
    seen: Dict[str, int] = {}
    result = set()
    for _, line in prose_lines(path.read_text(encoding="utf-8")):
        m = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not m:
            continue
        base = slug(m.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        result.add(base if n == 0 else f"{base}-{n}")
    return result


def broken_links(path: Path) -> List[str]:
    """Every relative link of ``path`` whose file or heading anchor does not exist."""
    problems = []
    for lineno, line in prose_lines(path.read_text(encoding="utf-8")):
        for target in LINK.findall(CODE_SPAN.sub("", line)):
            if re.match(r"[a-z][a-z0-9+.-]*:", target) or target.startswith("//"):
                continue  # URL or mailto: not checked offline
            file_part, _, anchor = target.partition("#")
            dest = path if not file_part else (path.parent / file_part).resolve()
            where = f"{path.relative_to(ROOT)}:{lineno}: {target}"
            if not dest.exists():
                problems.append(f"{where} (no such file)")
            elif ROOT not in dest.parents and dest != ROOT:
                problems.append(f"{where} (outside the repository)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                problems.append(f"{where} (no heading with this anchor)")
    return problems


def paragraphs(text: str) -> List[Tuple[int, int]]:
    """(first line, words) of every prose paragraph; list items, headings and table rows stand alone."""
    out: List[Tuple[int, int]] = []
    cur: List[Tuple[int, str]] = []

    def close():
        if cur:
            out.append((cur[0][0], len(" ".join(l for _, l in cur).split())))
            cur.clear()

    for i, line in prose_lines(text):
        stripped = line.strip()
        if not stripped or stripped.startswith(("|", "#")):
            close()
            continue
        if re.match(r"([-*+]|\d+\.)\s", stripped):
            close()
        cur.append((i, line))
    close()
    return out


def test_checker_reports_a_broken_link_and_anchor(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    (tmp_path / "a.md").write_text("# Title here\n\n[ok](b.md#second-part) [top](#title-here)\n"
                                   "[gone](missing.md) [bad anchor](b.md#nowhere)\n```\n[in code](nope.md)\n```\n")
    (tmp_path / "b.md").write_text("# B\n\n## Second part\n")
    problems = broken_links(tmp_path / "a.md")
    assert len(problems) == 2, problems
    assert "missing.md (no such file)" in problems[0] and "b.md#nowhere (no heading" in problems[1]


def test_slug_matches_github_anchors():
    assert slug("torch.compile (`--compile on`, `vidseg_core/compile.py`)") == \
        "torchcompile---compile-on-vidseg_corecompilepy"
    assert slug("Bugs and quirks, and what the pack does") == "bugs-and-quirks-and-what-the-pack-does"


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    assert broken_links(path) == []


@pytest.mark.parametrize("path", doc_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_nothing_points_outside_the_repository(path):
    text = path.read_text(encoding="utf-8")
    found = [(i, s) for i, line in enumerate(text.splitlines(), 1) for s in OUTSIDE if s in line]
    assert found == [], f"{path.relative_to(ROOT)} points outside the repository: {found}"


#: how code would name the development data folder beside the checkout (tests alone may read it)
CODE_OUTSIDE = ("../shared", '"shared" / "data"', "'shared' / 'data'", "/work/")


def test_no_shipped_or_developer_code_points_outside_the_repository():
    """The pack, its tools, benchmarks and scripts find real clips through ``benchmarks/clips.py``."""
    files = [p for d in ("nodes", "vidseg_core", "tools", "benchmarks", "scripts", ".ci") for p in (ROOT / d).rglob("*")
             if p.is_file() and p.suffix in (".py", ".sh", "") and "__pycache__" not in p.parts]
    files += [p for p in ROOT.glob("*.py")]
    assert len(files) > 50
    found = [f"{p.relative_to(ROOT)}:{i}: {s}" for p in files
             for i, line in enumerate(p.read_text(encoding="utf-8", errors="replace").splitlines(), 1)
             for s in CODE_OUTSIDE if s in line]
    assert found == [], found


def test_readme_is_a_quick_start():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    long = [(line, words) for line, words in paragraphs(text) if words > README_MAX_WORDS]
    assert long == [], f"README paragraphs over {README_MAX_WORDS} words (line, words): {long}"
    assert len(text.splitlines()) <= 200, "the README is a quick start; details belong in docs/"


@pytest.mark.parametrize("path", [p for p in doc_files() if p.name != "README.md" or p.parent != ROOT],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_docs_paragraphs_are_short(path):
    long = [(line, words) for line, words in paragraphs(path.read_text(encoding="utf-8"))
            if words > DOCS_MAX_WORDS]
    assert long == [], f"{path.relative_to(ROOT)}: paragraphs over {DOCS_MAX_WORDS} words (line, words): {long}"


CODE_POINTER = re.compile(r"\bdocs/[\w./-]*?\.md(?:#[\w-]+(?:,\s*#[\w-]+)*)?")


def code_pointers() -> List[Tuple[str, int, str]]:
    """(file, line, pointer) of every ``docs/...md[#anchor, #anchor]`` that the tracked code cites."""
    import subprocess

    try:
        files = subprocess.run(["git", "ls-files", "*.py", "*.sh", "*.js"], cwd=ROOT, capture_output=True,
                               text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the tracked files cannot be listed")
    found = []
    for name in files:
        if name.startswith("docs/") or name == "tests/test_docs_links.py":
            continue
        for i, line in enumerate((ROOT / name).read_text(encoding="utf-8").splitlines(), 1):
            found += [(name, i, m.group(0)) for m in CODE_POINTER.finditer(line)]
    return found


def test_docs_pages_cited_in_code_exist():
    """A comment or docstring citing ``docs/page.md#anchor`` names a page and heading that exist."""
    problems = []
    for name, line, pointer in code_pointers():
        page, _, anchor_list = pointer.partition("#")
        dest = ROOT / page
        if not dest.exists():
            problems.append(f"{name}:{line}: {pointer} (no such page)")
            continue
        for anchor in filter(None, (a.strip().lstrip("#") for a in anchor_list.split(","))):
            if anchor not in anchors(dest):
                problems.append(f"{name}:{line}: {pointer} (no heading #{anchor})")
    assert problems == []


def test_readme_node_table_matches_the_code():
    """The node tables (README, docs/comfyui.md) show each display name exactly as NODE_DISPLAY_NAME_MAPPINGS does."""
    from tools.pack_loader import load_pack

    declared: Dict[str, str] = dict(load_pack().nodes.NODE_DISPLAY_NAME_MAPPINGS)
    assert declared, "no NODE_DISPLAY_NAME_MAPPINGS found in nodes/"
    for page in ("README.md", "docs/comfyui.md"):
        text = (ROOT / page).read_text(encoding="utf-8")
        shown = dict(re.findall(r"^\| `(VidSeg\w+)` \| ([^|]+?) \|", text, re.M))
        assert shown == declared, page
