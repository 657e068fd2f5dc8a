"""`fluidsched report RESULTS_DIR [--out REPORT.md]`: one markdown report of every sweep under
RESULTS_DIR (a sweep's folder or a folder of them), with every table and figure and the commands
that produced them (`validation/report.py`). Reads result files only."""

from __future__ import annotations

import argparse
from pathlib import Path

from fluid.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="a sweep's folder or a folder of sweeps (e.g. validation/results)")
    parser.add_argument("--out", help="the markdown file to write (default RESULTS_DIR/report.md)")


def run(args) -> int:
    from validation.report import write_report

    results = Path(args.results_dir)
    if not results.is_dir():
        raise InputError(f"no such results folder {str(results)!r}; run `fluidsched sweep EXPERIMENT --out DIR` first", field="results_dir")
    print(write_report(results, Path(args.out) if args.out else None))
    return 0
