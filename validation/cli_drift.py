"""`fluidsched drift EXPERIMENT.yaml`: run one drift experiment (validation/drift.py) and write its
result JSON, figure and table (docs/adaptive.md)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fluid.errors import InputError
from validation.drift import load_experiment, run_experiment


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("config", help="an experiment file (validation/experiments/adaptive/*.yaml)")
    parser.add_argument("--out", help="result JSON (default: docs/adaptive-<name>.json)")
    parser.add_argument("--smoke", action="store_true", help="the file's small version, in seconds")
    parser.add_argument("--json", action="store_true", help="print the result JSON instead of a table")
    parser.add_argument("--no-figure", action="store_true", help="skip the figure (written beside the JSON as .png)")
    parser.add_argument("--adaptive-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a setting `solve --adaptive-KEY` takes for the adaptive run (e.g. backlog_wait_s=0.5); repeatable")


def run(args) -> int:
    from fluid.file_output import atomic_write_text, finite_json
    from fluid.tables import format_table

    exp = load_experiment(args.config, smoke=args.smoke)
    if args.adaptive_set:
        from dataclasses import replace

        from thresholds.adaptive import AdaptiveSettings

        extra = {}
        for item in args.adaptive_set:
            key, sep, value = item.partition("=")
            if not sep or key not in AdaptiveSettings.__dataclass_fields__:
                raise InputError(f"--adaptive-set takes KEY=VALUE with KEY one of {', '.join(AdaptiveSettings.__dataclass_fields__)}, "
                                 f"got {item!r}", field="--adaptive-set")
            try:
                extra[key] = int(value) if key == "min_completions" else float(value)
            except ValueError:
                raise InputError(f"{key} must be a number, got {value!r}", field="--adaptive-set") from None
        exp = replace(exp, adaptive={**exp.adaptive, **extra})
    out = Path(args.out) if args.out else Path("docs") / f"adaptive-{exp.name}.json"
    result = run_experiment(exp, progress=lambda r: print(f"  {r['policy']:<12} seed {r['seed']}: done", file=sys.stderr))
    atomic_write_text(out, json.dumps(finite_json(result), indent=1) + "\n")
    if not args.no_figure:
        from paper_figures.drift_throughput import draw

        draw(out, out.with_suffix(".png"))
    if args.json:
        print(json.dumps(finite_json(result), indent=1))
        return 0
    rows = [[r["policy"], str(r["seed"]), f"{r['cumulative_throughput_vs_fluid_min']:.4f}", f"{r['completed_tokens_vs_fluid_min']:.4f}",
             f"{r['mean_latency_s']:.3f}", f"{r['mean_ttft_s']:.3f}", str(r["restarts"]), str(r["peak_kv_tokens"])] for r in result["runs"]]
    print(format_table(["policy", "seed", "generated tok / fluid (min)", "completed tok / fluid (min)", "lat mean s",
                        "TTFT mean s", "restarts", "peak KV"], rows))
    print(f"\nwrote {out}")
    return 0
