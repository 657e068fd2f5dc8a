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
    if args.out:
        from fluid.file_output import check_writable_dir

        check_writable_dir(out)
    demo_files = sorted(results.rglob("demo.json"))
    for demo_json in demo_files:  # every file checked before any figure is drawn
        check_demo_json(demo_json)
    drawn = []
    for demo_json in demo_files:
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


def _number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def check_demo_json(path: Path) -> dict:
    """Read a demo.json and check the fields the figure draws; a corrupt file is an InputError."""
    from fluid.file_input import read_json

    data = read_json(path, what="demo result file")
    advice = "it is not a complete demo.json; rerun `fluidsched demo --out DIR`"
    if not isinstance(data, dict):
        raise InputError(f"must be a JSON object, got {type(data).__name__}; {advice}", source=str(path))
    fluid = data.get("fluid")
    if not isinstance(fluid, dict):
        raise InputError(f"missing or not an object; {advice}", source=str(path), field="fluid")
    for key in ("throughput_star_tokens_per_s", "kv_capacity_tokens"):
        if not _number(fluid.get(key)):
            raise InputError(f"must be a number, got {fluid.get(key)!r:.60}; {advice}", source=str(path), field=f"fluid.{key}")
    summaries = data.get("summaries")
    if not isinstance(summaries, list) or not summaries:
        raise InputError(f"must be a non-empty list of run summaries; {advice}", source=str(path), field="summaries")
    for i, summary in enumerate(summaries):
        if not isinstance(summary, dict) or not isinstance(summary.get("scheduler"), str):
            raise InputError(f"must be an object with a 'scheduler' name; {advice}", source=str(path), field=f"summaries[{i}]")
        for key in ("throughput_tokens_per_s", "mean_latency_s", "p99_latency_s", "mean_ttft_s", "peak_kv_tokens"):
            value = summary.get(key)
            if value is not None and not _number(value):
                raise InputError(f"must be a number or null, got {value!r:.60}; {advice}", source=str(path),
                                 field=f"summaries[{i}].{key}")
    return data
