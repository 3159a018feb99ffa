"""The docs point only at what the repository holds, and nothing cites a tracker number.

Checked over every file git tracks (plus new, not-ignored ones): relative markdown links and
backticked repository paths in ``*.md`` must name a file or folder that exists; no file may cite a
tracker number ("issue" followed by a number) or the research notes on kernels, which readers of
the project cannot open.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Built from pieces so that this file does not match its own patterns.
TRACKER = re.compile(r"\bissues?\s+#?[0-9]|\bissues?\s*#[0-9]", re.IGNORECASE)
NOTES = re.compile("kernels" + r"\.md", re.IGNORECASE)
INLINE_LINK = re.compile(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE_LINK = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.MULTILINE)
# A backticked path into the tree: a file (with a suffix) or a folder (trailing slash).
REPO_PATH = re.compile(
    r"`((?:combcn|configs|docs|bench|tests|native|install|plugin|farm|tools)/(?:[\w./-]*/|[\w./-]*\.\w+))`"
)
TEXT_SUFFIXES = {
    ".md", ".py", ".pyi", ".c", ".h", ".cpp", ".cu", ".cuh", ".sh", ".yaml", ".yml", ".toml",
    ".txt", ".json", ".cfg", ".ini", ".plist", ".map", ".cmake",
}  # fmt: skip


def repo_files() -> list[Path]:
    """Tracked and new (not ignored) files of the checkout, relative to its root."""
    try:
        out = subprocess.run(
            ["git", "-C", str(REPO), "ls-files", "-co", "--exclude-standard", "-z"],
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout: the list of tracked files is unknown")
    return [Path(p) for p in out.decode().split("\0") if p and (REPO / p).is_file()]


def _prose(text: str) -> str:
    """The markdown outside fenced code blocks (a link inside a code block is not a link)."""
    return re.sub(r"^(```|~~~).*?^\1[^\n]*$", "", text, flags=re.MULTILINE | re.DOTALL)


def missing_link_targets(md: Path, root: Path) -> list[str]:
    """Relative link targets and backticked repository paths in ``md`` that do not exist under ``root``."""
    text = _prose(md.read_text(encoding="utf-8"))
    missing = []
    for target in INLINE_LINK.findall(text) + REFERENCE_LINK.findall(text):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE) or target.startswith("#"):
            continue  # a URL (http:, mailto:) or an anchor in the same page
        path = target.split("#", 1)[0]
        if path and not (md.parent / path).exists():
            missing.append(target)
    for path in REPO_PATH.findall(text):
        if not (root / path).exists():
            missing.append(path)
    return missing


def forbidden_references(text: str) -> list[str]:
    """Tracker numbers and mentions of the unshipped kernel notes in ``text``, one entry per line."""
    return [line.strip() for line in text.splitlines() if TRACKER.search(line) or NOTES.search(line)]


class TestCheckers:
    """The checkers themselves catch what they are meant to (so a clean tree means something)."""

    def test_missing_link(self, tmp_path: Path) -> None:
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "A.md").write_text("a")
        md = tmp_path / "docs" / "B.md"
        md.write_text(
            "[ok](A.md) [ok too](A.md#part) [web](https://example.com) [here](#top)\n"
            "[gone](NOPE.md) [gone too](../nowhere/x.md#y)\n[ref]: missing.md\n"
            "`docs/A.md` `configs/none.yaml`\n```\n[in code](not-checked.md)\n```\n"
        )
        assert missing_link_targets(md, tmp_path) == [
            "NOPE.md",
            "../nowhere/x.md#y",
            "missing.md",
            "configs/none.yaml",
        ]

    def test_forbidden_references(self) -> None:
        word, notes = "iss" + "ue", "kernels" + ".md"
        lines = [f"see {word} 3 here", f"as in {word.upper()}S #12", f"notes: {notes} §2"]
        text = "\n".join(["fine", *lines, "issued 4 times is no citation"])
        assert forbidden_references(text) == lines


def test_doc_links_exist() -> None:
    broken = {
        str(md): missing
        for md in repo_files()
        if md.suffix == ".md" and (missing := missing_link_targets(REPO / md, REPO))
    }
    assert not broken, f"links or paths to files that are not in the repository: {broken}"


def test_no_tracker_numbers_or_unshipped_notes() -> None:
    found = {}
    for path in repo_files():
        if path.suffix.lower() not in TEXT_SUFFIXES:
            continue
        try:
            text = (REPO / path).read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        if hits := forbidden_references(text):
            found[str(path)] = hits
    assert not found, f"cite the fact, not a tracker number or unshipped notes: {found}"
