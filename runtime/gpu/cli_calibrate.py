"""`fluidsched calibrate [--device cuda] [--model NAME] [--out FILE]`: measure and fit step times.

Writes one JSON file: the device, versions and host, every measured row, the `affine` and
`linear3` fits with MAPE and R², and the stepwise model (`fluid.batch_time_stepwise`) with its
k-fold held-out MAPE per region. `batch_time_stepwise` is that model and `batch_time` the linear3
fitted to it over the grid, each in the exact form a workload's `batch_time:` field takes: the
fluid benchmark and `solve` read the linear one, `simulate` can run either.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from fluid.errors import InputError
from fluid.file_output import finite_json
from runtime.gpu.calibrate import DEFAULT_SUSTAIN_S


HELP_EXAMPLES = """examples:
  fluidsched calibrate --device cuda --out calibration.json
  fluidsched calibrate --device cpu --model tiny-llama --grid-scale 0.05 --out cal.json   (about 30 s on 2 CPU cores)

On CPU a tiny model's step times are mostly fixed overheads and noise, so the fit is flagged as
not useful; calibrate on the GPU you will run on to solve thresholds for it."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = HELP_EXAMPLES
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    parser.add_argument("--model", default="llama-2-7b", help="preset, Hugging Face checkpoint folder or LlamaConfig JSON (default llama-2-7b)")
    parser.add_argument("--checkpoint", help="local safetensors checkpoint folder (default: random weights)")
    parser.add_argument("--dtype", default="auto", help="bf16, fp16, fp32 or auto")
    parser.add_argument("--kv-tokens", type=int, help="KV pool size in tokens (default: what free memory allows; 8192 on CPU)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per grid point (median kept)")
    parser.add_argument("--passes", type=int, default=3, help="passes over the whole grid (default 3; repeats of a point stay in one held-out fold)")
    parser.add_argument("--pass-order", choices=("grid", "shuffled"), default="shuffled",
                        help="each pass in its own shuffled order (default), so a slow stretch of the machine falls on different "
                             "points in each pass, or every pass in the grid's order")
    parser.add_argument("--aggregate", choices=("rows", "median"),
                        help="fit one row per point, its median over the passes (default with 2 or more passes), or every pass's "
                             "row (default with one); the per-row held-out error is recorded either way")
    parser.add_argument("--grid-scale", type=float, default=1.0, help="scale the grid's token counts (e.g. 0.05 for a tiny CPU model)")
    parser.add_argument("--from-steps", nargs="+", default=[], metavar="FILE",
                        help="step logs of recorded live runs (a run's live-steps.json.gz, docs/*-steps.json.gz): up to --per-region "
                             "of their steps per region join the grid, timed interleaved; the fit is scored on each run held out")
    parser.add_argument("--per-region", type=int, default=40, help="recorded steps per region with --from-steps (default 40)")
    parser.add_argument("--warmup-s", type=float, help="seconds of untimed grid steps before timing (default 3 on cuda, 0 on cpu)")
    parser.add_argument("--sustain-s", type=float,
                        help="seconds each grid point runs back to back, untimed, before it is timed: the power state of a busy loop "
                             f"(default {DEFAULT_SUSTAIN_S} on cuda, 0 on cpu)")
    parser.add_argument("--out", default="calibration.json", help="output JSON file (default calibration.json)")
    parser.add_argument("--json", action="store_true", help="print the result JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it shows only on a terminal)")


# A linear3 fit that misses the measured step times by more than this on average cannot stand in
# for the machine in the fluid benchmark (solved thresholds would be off by as much).
USEFUL_FIT_MAPE = 0.25


def fit_warning(fits: dict) -> str | None:
    """Why the linear3 fit should not be trusted, or None."""
    f = fits["linear3"]
    if f["mape"] <= USEFUL_FIT_MAPE and f["r2"] >= 0.9:
        return None
    return (
        f"the linear3 fit misses the measured step times by {100 * f['mape']:.0f} % on average (R² {f['r2']:.3f}); "
        f"thresholds solved from it would be off by as much. On CPU, timings of a tiny model are dominated by noise and "
        f"fixed overheads: raise --repeats, use --grid-scale 1 with a larger model, or calibrate on the GPU you will run on"
    )


def run(args) -> int:
    from runtime.gpu.requirements import require_gpu_packages

    require_gpu_packages("calibrate")
    from fluid.file_output import atomic_write_text, check_out_file
    from runtime.gpu.cli_run import check_block_size
    from runtime.gpu.setup import check_device, check_host_memory, model_and_checkpoint, model_config, resolve_dtype

    check_block_size(args.block_size)
    if args.kv_tokens is not None and args.kv_tokens < args.block_size:
        raise InputError(f"--kv-tokens must hold at least one block of {args.block_size} tokens, got {args.kv_tokens}", field="kv_tokens")
    if not math.isfinite(args.grid_scale):
        raise InputError(f"--grid-scale must be a finite number in (0, 1], got {args.grid_scale}", field="grid_scale")
    check_out_file(args.out)
    if args.passes < 1:
        raise InputError(f"--passes must be at least 1, got {args.passes}", field="passes")
    from runtime.gpu.calibrate import resolve_aggregate

    args.aggregate = resolve_aggregate(args.passes, args.aggregate)
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}", field="repeats")
    if not 0 < args.grid_scale <= 1:
        raise InputError(f"--grid-scale must be in (0, 1], got {args.grid_scale}", field="grid_scale")
    if args.warmup_s is not None and not (math.isfinite(args.warmup_s) and args.warmup_s >= 0):
        raise InputError(f"--warmup-s must be a finite number of seconds ≥ 0, got {args.warmup_s}", field="warmup_s")
    if args.sustain_s is not None and not (math.isfinite(args.sustain_s) and args.sustain_s >= 0):
        raise InputError(f"--sustain-s must be a finite number of seconds ≥ 0, got {args.sustain_s}", field="sustain_s")
    if args.per_region < 1:
        raise InputError(f"--per-region must be at least 1, got {args.per_region}", field="per_region")
    if args.from_steps:
        from runtime.gpu.calibrate import load_recorded
        from runtime.recorded_steps import ReplayInputError

        try:
            load_recorded(args.from_steps)  # a bad file fails before the model loads
        except ReplayInputError as err:
            raise InputError(str(err), field="from_steps") from None
    device = check_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model_label = args.model
    args.model, args.checkpoint = model_and_checkpoint(args.model, args.checkpoint)
    cfg = model_config(args.model, args.checkpoint)
    kv_tokens = args.kv_tokens if args.kv_tokens is not None or device.type == "cuda" else 8192
    if device.type == "cpu":
        check_host_memory(cfg, dtype, kv_tokens, model_name=model_label)

    from runtime.gpu.calibrate import calibrate_engine, pass_drift_warning
    from runtime.gpu.engine import Engine
    from runtime.gpu.setup import build_pool, load_runner
    from runtime.progress import iterate, progress_enabled

    runner = load_runner(cfg, args.checkpoint, dtype=dtype, device=device)
    pool, info = build_pool(runner, kv_tokens=kv_tokens, block_size=args.block_size)
    engine = Engine(runner, pool)
    result = calibrate_engine(
        engine, info, model=model_label, grid_scale=args.grid_scale, repeats=args.repeats, passes=args.passes,
        wrap_grid=lambda grid: iterate(grid, f"calibrating on {info.device_name}", enabled=progress_enabled(args.quiet)),
        from_steps=args.from_steps, per_region=args.per_region, pass_order=args.pass_order, aggregate=args.aggregate,
        warmup_s=args.warmup_s if args.warmup_s is not None else (3.0 if device.type == "cuda" else 0.0),
        sustain_s=args.sustain_s if args.sustain_s is not None else (DEFAULT_SUSTAIN_S if device.type == "cuda" else 0.0),
    )
    fits, stepwise = result["fits"], result["fits"]["stepwise"]
    warning = fit_warning(fits)
    if warning:
        result["fit_warning"] = warning
    drift_warning = pass_drift_warning(result.get("pass_drift"))
    if drift_warning:
        result["pass_drift_warning"] = drift_warning
    out = Path(args.out)
    atomic_write_text(out, json.dumps(finite_json(result), indent=1, allow_nan=False) + "\n", record=True)
    if args.json:
        json.dump(finite_json(result), sys.stdout, indent=1, allow_nan=False)
        print()
    else:
        for kind in ("affine", "linear3"):
            f = fits[kind]
            print(f"{kind:8s} {json.dumps(f['batch_time'])}  MAPE {100 * f['mape']:.1f} %  R² {f['r2']:.4f}")
        by_row = "" if args.aggregate == "rows" else f"; fitted on each pass's row: {100 * result['heldout_step_mape_by_row']:.1f} %"
        print(f"stepwise held-out MAPE {100 * stepwise['heldout_mape']:.1f} % (fitted on {args.aggregate}{by_row}; worst region {stepwise['worst_region']}: "
              f"{100 * stepwise['heldout_mape_by_region'][stepwise['worst_region']]:.1f} %); its linear3 is "
              f"{100 * stepwise['linear_vs_model_mape']:.1f} % from it, {100 * stepwise['linear_vs_measured_mape']:.1f} % from the measurements")
        print(f"{len(result['table'])} grid points on {info.device_name}; written to {out}")
    for line in (warning, drift_warning):
        if line:
            print(f"warning: {line}", file=sys.stderr)
    return 0
