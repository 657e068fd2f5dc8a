"""Surviving mutants of `benchmarks/mutation.py` that are equivalent: no input can tell them apart.

Each entry: (file, the stripped source line, "original->replacement") and why. A mutant matching an
entry is left out of the score and listed with its reason; an entry that no longer matches any
mutant is harmless (the line changed). Add an entry only with the reason a test cannot fail.
"""

EQUIVALENTS: dict[tuple[str, str, str], str] = {
}


def reason_for(path: str, source_line: str, original: str, replacement: str) -> str | None:
    return EQUIVALENTS.get((path, source_line, f"{original}->{replacement}"))
