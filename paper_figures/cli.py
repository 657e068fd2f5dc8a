"""`fluidsched figures RESULTS_DIR [--out DIR]`: draw every figure whose result files are in
RESULTS_DIR, from those files only (never runs a simulation), in seconds.

RESULTS_DIR is a sweep's folder (`fluidsched sweep --out`), a folder of them (e.g.
`validation/results/`), or a demo folder (`demo.json`). Each figure is one module of
`paper_figures/` with `EXPERIMENTS` (the experiments it draws) and `draw(results, png)`; a sweep's
figures go to `<sweep>/figures/<module>.png`. Calibration results (`calibration/*.json`) get the
calibration-fit figure.
"""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import InputError

SWEEP_FIGURES = (
    "near_optimality",
    "memory_vs_capacity",
    "throughput_over_time",
    "cumulative_vs_fluid",
    "latency_by_prompt",
    "latency_vs_load",
    "queue_growth",
    "nested_memory_vs_segments",
    "slai_slo",
    "fleet_routing",
    "counterexample",
    "demo_load",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results_dir", help="a sweep's folder, a folder of sweeps (validation/results) or a demo folder")
    parser.add_argument("--out", help="where to write the PNGs (default: beside the results)")
    add_json_argument(parser, "print {figures: [paths]} as JSON instead of one path per line")


def sweep_folders(results: Path) -> list[Path]:
    from paper_figures.results import is_sweep

    if is_sweep(results):
        return [results]
    return sorted(p for p in results.iterdir() if p.is_dir() and is_sweep(p))


def draw_sweep(sweep: Path, out_dir: Path) -> list[Path]:
    """Every figure that applies to the sweep's experiment, into `out_dir`."""
    from paper_figures.results import experiment_name

    name = experiment_name(sweep)
    drawn = []
    for module_name in SWEEP_FIGURES:
        module = importlib.import_module(f"paper_figures.{module_name}")
        if name in module.EXPERIMENTS:
            path = module.draw(sweep, out_dir / f"{module_name}.png")
            if path is not None:
                drawn.append(path)
    return drawn


def draw_all(results: Path, out: Path | None = None) -> list[Path]:
    results = Path(results)
    if not results.is_dir():
        raise InputError(f"no such results folder {str(results)!r}; run `fluidsched sweep` or `fluidsched demo` first", field="results_dir")
    out = Path(out) if out else results
    if out != results:
        from fluid.file_output import check_writable_dir

        check_writable_dir(out)
    demo_files = sorted(results.rglob("demo.json"))
    for demo_json in demo_files:  # every file checked before any figure is drawn
        check_demo_json(demo_json)
    drawn = []
    for sweep in sweep_folders(results):
        drawn += draw_sweep(sweep, out / sweep.relative_to(results) / "figures")
    for calibration in sorted(results.glob("calibration/*.json")):
        from paper_figures.calibration_fit import draw

        path = draw(calibration, out / calibration.parent.relative_to(results) / f"{calibration.stem}-fit.png")
        drawn += [path] if path else []
    for demo_json in demo_files:
        from paper_figures.demo_comparison import draw_demo_comparison

        drawn.append(draw_demo_comparison(demo_json, out / demo_json.parent.relative_to(results) / "demo_comparison.png"))
    if not drawn:
        raise InputError(f"found no result files to draw in {str(results)!r} (looked for points.sqlite, calibration/*.json, demo.json)",
                         field="results_dir")
    return drawn


def run(args) -> int:
    drawn = draw_all(Path(args.results_dir), Path(args.out) if args.out else None)
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
        for key in ("decode_throughput_tokens_per_s", "mean_latency_s", "p99_latency_s", "mean_ttft_s", "peak_kv_tokens"):
            value = summary.get(key)
            if value is not None and not _number(value):
                raise InputError(f"must be a number or null, got {value!r:.60}; {advice}", source=str(path),
                                 field=f"summaries[{i}].{key}")
    return data
