"""Docstrings and docs cite papers by arXiv id and section and the project's own docs/, never a
notes file the repository does not contain."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUFFIXES = {".py", ".md", ".yaml", ".yml", ".json", ".toml"}
MISSING_NOTES = "PAPERS" + ".md"  # spelled in two parts so this file does not cite it


def test_no_file_cites_the_missing_notes():
    offenders = []
    for path in ROOT.rglob("*"):
        if path.suffix not in SUFFIXES or any(part.startswith(".") for part in path.relative_to(ROOT).parts):
            continue
        if path.is_file() and MISSING_NOTES in path.read_text(encoding="utf-8", errors="replace"):
            offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, f"cite arXiv id and section or docs/ instead: {offenders}"
