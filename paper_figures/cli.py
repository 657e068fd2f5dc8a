"""`fluidsched figures RESULTS_DIR`: draw every figure whose result files are in RESULTS_DIR.

Reads result files only (never runs a simulation): a `demo.json` gives the demo comparison.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="folder with result files (e.g. runs/demo)")
    parser.add_argument("--out", help="where to write the PNGs (default: RESULTS_DIR)")
    add_json_argument(parser, "print {figures: [paths]} as JSON instead of one path per line")


def run(args) -> int:
    results = Path(args.results_dir)
    if not results.is_dir():
        raise InputError(f"no such results folder {str(results)!r}; run `fluidsched demo --out DIR` first", field="results_dir")
    out = Path(args.out) if args.out else results
    drawn = []
    for demo_json in sorted(results.rglob("demo.json")):
        from paper_figures.demo_comparison import draw_demo_comparison

        target = out / demo_json.parent.relative_to(results) / "demo_comparison.png"
        drawn.append(draw_demo_comparison(demo_json, target))
    if not drawn:
        raise InputError(f"found no result files to draw in {str(results)!r} (looked for demo.json)", field="results_dir")
    if args.json:
        print_json({"figures": [str(p) for p in drawn]})
        return 0
    for path in drawn:
        print(path)
    return 0
