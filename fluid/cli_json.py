"""`--json` for every command: one flag, one printer.

A command given `--json` prints exactly one JSON object (or array) on stdout and nothing else
there (notes go to stderr), so its output can be piped into `jq` or read by a script. NaN and
infinity are not JSON: a value that is not finite is an error of the command, not a silent
`NaN` in the output.
"""

from __future__ import annotations

import json
import sys


def add_json_argument(parser, what: str = "print one JSON object instead of tables") -> None:
    parser.add_argument("--json", action="store_true", help=what)


def print_json(data) -> None:
    json.dump(data, sys.stdout, indent=2, allow_nan=False, default=_default)
    sys.stdout.write("\n")


def _default(value):
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
