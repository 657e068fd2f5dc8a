"""The fluid point's KV memory when the cache is allocated in blocks (docs/capped-rule.md, "Measured").

At the fluid point a type-j request sits at each stage s = 0..l'_j for one iteration ΔT*, holding
l_j + s tokens; λ_j ΔT* such requests sit at every stage. In tokens that is M* = Σ_j λ_j ΔT* Σ_s (l_j + s);
in blocks of B tokens each request holds B ⌈(l_j + s)/B⌉, so the fluid point needs

    M*_B = Σ_j λ_j ΔT* Σ_{s=0}^{l'_j} B ⌈(l_j + s)/B⌉.

M*_B grows with the rate (ΔT* and λ both do), so the highest rate scale whose block-rounded fluid point
fits C, θ*_B, is found by bisection. A row whose rate is above θ*_B cannot carry throughput* without
holding more KV blocks than the cache has, under any scheduler that keeps every resident's cache.

    python benchmarks/fluid_block_memory.py [--block 16] [--presets a,b]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def block_memory_tokens(workload, block: int) -> tuple[float, float]:
    """(M* in tokens, M*_B in tokens of whole blocks) at the workload's fluid point."""
    from fluid.equilibrium import closed_form

    dt = closed_form(workload).iteration_time_star_s
    tokens = blocks = 0.0
    for t in workload.types:
        per_stage = t.rate_per_s * dt
        tokens += per_stage * sum(t.prefill + s for s in range(t.decode + 1))
        blocks += per_stage * sum(block * math.ceil((t.prefill + s) / block) for s in range(t.decode + 1))
    return tokens, blocks


def block_capacity_scale(name: str, block: int, theta: float) -> float:
    """The highest rate scale (≤ θ*) whose block-rounded fluid point fits C, by bisection."""
    from fluid.workload_io import load_workload

    lo, hi = 0.0, theta * (1 - 1e-12)
    for _ in range(60):
        mid = (lo + hi) / 2
        w = load_workload(name, rate_scale=mid)
        lo, hi = (mid, hi) if block_memory_tokens(w, block)[1] <= w.kv_capacity_tokens else (lo, mid)
    return lo


def main(argv=None) -> int:
    from fluid.equilibrium import closed_form
    from fluid.presets import preset_names
    from fluid.workload_io import load_workload

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--block", type=int, default=16, help="KV block size in tokens (default 16, the benchmarks')")
    ap.add_argument("--presets", default=None, help="comma-separated (default: every preset)")
    args = ap.parse_args(argv)
    if args.block < 1:
        print(f"--block must be a positive number of tokens, got {args.block}", file=sys.stderr)
        return 2
    presets = args.presets.split(",") if args.presets else list(preset_names())
    print(f"{'preset':24} {'load':9} {'M* tokens':>11} {'M*_B':>11} {'C':>9} {'M*_B/C':>7} {'θ*_B/rate':>9}")
    for name in presets:
        theta = closed_form(load_workload(name)).capacity_scale
        theta_b = block_capacity_scale(name, args.block, theta)
        for label, scale in (("own rate", 1.0), ("0.95 θ*", 0.95 * theta)):
            w = load_workload(name, rate_scale=scale)
            tokens, blocks = block_memory_tokens(w, args.block)
            print(f"{name:24} {label:9} {tokens:11,.0f} {blocks:11,.0f} {w.kv_capacity_tokens:9,} "
                  f"{blocks / w.kv_capacity_tokens:7.3f} {theta_b / scale:9.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
