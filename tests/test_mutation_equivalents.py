"""benchmarks/mutation_equivalents.py: one entry per equivalent mutant, found by its key."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import mutation_equivalents as eq


def test_no_key_is_written_twice():
    """A dict literal keeps the last of two equal keys: the first entry's reason would be lost unseen."""
    tree = ast.parse((ROOT / "benchmarks/mutation_equivalents.py").read_text())
    repeated = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            seen = {}
            for key in node.keys:
                value = ast.literal_eval(key)
                if value in seen:
                    repeated.append((key.lineno, seen[value], value))
                seen.setdefault(value, key.lineno)
    assert repeated == []


def test_reason_for_matches_the_whole_key_and_the_column_where_given():
    (path, line, edit), reason = next(iter(eq.EQUIVALENTS.items()))
    original, replacement = edit.split("->")
    assert eq.reason_for(path, line, original, replacement) == reason
    assert eq.reason_for(path, line + " ", original, replacement) is None
    assert eq.reason_for(path, line, original, replacement + "x") is None
    (path, line, edit, column), reason = next(iter(eq.EQUIVALENTS_AT.items()))
    original, replacement = edit.split("->")
    assert eq.reason_for(path, line, original, replacement, column) == reason
    assert eq.reason_for(path, line, original, replacement, column + 1) == eq.EQUIVALENTS.get((path, line, edit))
