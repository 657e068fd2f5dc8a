"""Reading input files safely: one home for the checks every reader needs.

Every file a user hands in (workload, policy, trace, profile CSV, split file, result file) goes
through here, so that the same bad inputs get the same clear `InputError` everywhere:

- bytes that are not UTF-8 name the line and byte offset (and what to do: re-save as UTF-8);
- YAML and JSON nested deeper than `MAX_NESTING` are refused before the parser recurses (a
  Python parser otherwise dies with a RecursionError, or takes minutes, on `[[[[...`);
- a key written twice in one mapping is refused (YAML and JSON both let the last one win
  silently, which hides typos and merge accidents);
- JSON's non-standard `NaN` / `Infinity` constants are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from fluid.errors import InputError

# Deeper than any real workload or policy (they nest 4-5 levels) and far below Python's recursion limit.
MAX_NESTING = 64


def read_text(path: str | Path, *, what: str, source: str | None = None) -> str:
    """The file's text as UTF-8; an InputError naming the file for a missing file or bad bytes."""
    source = source or str(path)
    try:
        data = Path(path).read_bytes()
    except IsADirectoryError:
        raise InputError(f"is a folder, not a {what}; give the file itself", source=source) from None
    except OSError as err:
        raise InputError(f"cannot read the {what}: {err.strerror or err}; check the path", source=source) from None
    return decode_utf8(data, what=what, source=source)


def decode_utf8(data: bytes, *, what: str, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise InputError(
            f"the {what} is not UTF-8 text (byte 0x{data[err.start]:02x} at offset {err.start}, line {line}); "
            f"re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)",
            source=f"{source}:{line}",
        ) from None
    return text.removeprefix("\ufeff")  # a byte-order mark is not part of the content


_OPENERS = re.compile(r"[\[{]")


def check_nesting(text: str, *, what: str, source: str) -> None:
    """Refuse more than MAX_NESTING open brackets (flow style) or indentation levels.

    A cheap upper bound (brackets inside strings count too); a real file never comes close.
    """
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth = max(0, depth - 1)
    indent_levels = max((len(line) - len(line.lstrip(" -")) for line in text.splitlines()), default=0) // 2
    if deepest > MAX_NESTING or indent_levels > MAX_NESTING:
        raise InputError(
            f"the {what} nests more than {MAX_NESTING} levels deep (found {max(deepest, indent_levels)}); "
            f"no valid {what} does, so this is probably a generated or corrupted file",
            source=source,
        )


def _unique_pairs(source: str, what: str):
    def hook(pairs):
        out = {}
        for key, value in pairs:
            if key in out:
                raise InputError(f"key {key!r} appears twice in one object; keep one (JSON would silently use the last)",
                                 source=source, field=str(key))
            out[key] = value
        return out

    return hook


def _reject_constant(name: str):
    raise InputError(f"{name} is not a number JSON allows; write a finite number (or null where the format allows it)")


def parse_json(text: str, *, what: str, source: str):
    """Parse JSON text with the checks above; syntax errors name line and column."""
    check_nesting(text, what=what, source=source)
    try:
        return json.loads(text, object_pairs_hook=_unique_pairs(source, what), parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON at line {err.lineno}, column {err.colno}: {err.msg}; fix the {what}",
                         source=f"{source}:{err.lineno}") from None
    except InputError as err:
        if err.source is None:
            raise InputError(str(err), source=source) from None
        raise


def read_json(path: str | Path, *, what: str, source: str | None = None):
    source = source or str(path)
    return parse_json(read_text(path, what=what, source=source), what=what, source=source)


def duplicate_key_error(key, *, line: int, source: str) -> InputError:
    return InputError(
        f"key {key!r} appears twice in one mapping (YAML would silently use the last); keep one",
        source=f"{source}:{line}",
        field=str(key),
    )
