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
import sys
from pathlib import Path

from fluid.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    parser.add_argument("--model", default="llama-2-7b", help="preset or LlamaConfig JSON (default llama-2-7b)")
    parser.add_argument("--checkpoint", help="local safetensors checkpoint folder (default: random weights)")
    parser.add_argument("--dtype", default="auto", help="bf16, fp16, fp32 or auto")
    parser.add_argument("--kv-tokens", type=int, help="KV pool size in tokens (default: what free memory allows; 8192 on CPU)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per grid point (median kept)")
    parser.add_argument("--passes", type=int, default=2, help="passes over the whole grid (default 2; repeats of a point stay in one held-out fold)")
    parser.add_argument("--grid-scale", type=float, default=1.0, help="scale the grid's token counts (e.g. 0.05 for a tiny CPU model)")
    parser.add_argument("--out", default="calibration.json", help="output JSON file (default calibration.json)")
    parser.add_argument("--json", action="store_true", help="print the result JSON")


def run(args) -> int:
    from runtime.gpu.setup import check_device, model_config, resolve_dtype

    if args.passes < 1:
        raise InputError(f"--passes must be at least 1, got {args.passes}", field="passes")
    if args.repeats < 1:
        raise InputError(f"--repeats must be at least 1, got {args.repeats}", field="repeats")
    if not 0 < args.grid_scale <= 1:
        raise InputError(f"--grid-scale must be in (0, 1], got {args.grid_scale}", field="grid_scale")
    device = check_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    cfg = model_config(args.model, args.checkpoint)
    kv_tokens = args.kv_tokens if args.kv_tokens is not None or device.type == "cuda" else 8192

    from runtime.gpu.calibrate import calibrate_engine
    from runtime.gpu.engine import Engine
    from runtime.gpu.setup import build_pool, load_runner

    runner = load_runner(cfg, args.checkpoint, dtype=dtype, device=device)
    pool, info = build_pool(runner, kv_tokens=kv_tokens, block_size=args.block_size)
    engine = Engine(runner, pool)
    result = calibrate_engine(engine, info, model=args.model, grid_scale=args.grid_scale, repeats=args.repeats, passes=args.passes)
    fits, stepwise = result["fits"], result["fits"]["stepwise"]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    if args.json:
        json.dump(result, sys.stdout, indent=1)
        print()
    else:
        for kind in ("affine", "linear3"):
            f = fits[kind]
            print(f"{kind:8s} {json.dumps(f['batch_time'])}  MAPE {100 * f['mape']:.1f} %  R² {f['r2']:.4f}")
        print(f"stepwise held-out MAPE {100 * stepwise['heldout_mape']:.1f} % (worst region {stepwise['worst_region']}: "
              f"{100 * stepwise['heldout_mape_by_region'][stepwise['worst_region']]:.1f} %); its linear3 is "
              f"{100 * stepwise['linear_vs_model_mape']:.1f} % from it, {100 * stepwise['linear_vs_measured_mape']:.1f} % from the measurements")
        print(f"{len(result['table'])} grid points on {info.device_name}; written to {out}")
    return 0
