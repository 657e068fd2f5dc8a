"""Where a prefill step's device time goes, kernel by kernel, as its token count is split into more sequences.

    PYTHONPATH=. python benchmarks/profile_steps.py --out docs/profile-steps-h200.json

The flatness benchmark (`gpu_steps.py`) times a fixed token count split into 1 to 32 prefill
sequences; this one runs the same compositions under `torch.profiler` (Llama-2-7B shape, bf16,
random weights; 5 steps each after 2 warm-ups) and reports, per composition, the device time of
every kernel summed over the steps and divided by their number, the step's wall time, and the
kernels whose time grows most from the fewest to the most sequences. Graph replays are profiled
too (CUPTI reports the kernels inside a graph), so both paths are visible.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

TOKENS = (512, 2048)
SEQS = (1, 8, 32)
PREFIXES = (0, 256)


def _kernel_times_us(prof, steps: int) -> dict[str, float]:
    """Device time per step of each kernel name (µs), from the profiler's kernel events."""
    out: dict[str, float] = {}
    for ev in prof.events():
        if getattr(ev, "device_type", None) is None or str(ev.device_type).split(".")[-1] != "CUDA":
            continue
        dur = getattr(ev, "device_time", None) or getattr(ev, "cuda_time", 0.0) or 0.0
        out[ev.name] = out.get(ev.name, 0.0) + float(dur) / steps
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def profile_composition(engine, timer, composition, *, steps: int = 5, warmup: int = 2) -> dict:
    import torch
    from torch.profiler import ProfilerActivity, profile

    with timer.holding([composition]) as (batch,):
        for _ in range(warmup):
            engine.execute(batch)
        torch.cuda.synchronize()
        walls = []
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(steps):
                t = time.perf_counter()
                engine.execute(batch)
                walls.append(time.perf_counter() - t)
        torch.cuda.synchronize()
        graph = bool(engine._used_graph)
    kernels = _kernel_times_us(prof, steps)
    return {"wall_s": statistics.median(walls), "graph": graph, "kernel_us_per_step": kernels,
            "device_us_per_step": sum(kernels.values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/profile-steps.json")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--top", type=int, default=8, help="kernels printed per composition")
    args = ap.parse_args()
    from gpu_steps import _with_mixed_graphs, build_engine

    from runtime.gpu.host_info import versions
    from runtime.gpu.step_timer import StepTimer

    engine, info = build_engine(args.model)
    timer = StepTimer(engine)
    res = {"device": info.device_name, "versions": versions(), "model": args.model,
           "command": "PYTHONPATH=. python benchmarks/profile_steps.py " + " ".join(sys.argv[1:]), "rows": []}
    for graphs in (True, False):
        with _with_mixed_graphs(engine, graphs):
            for tokens in TOKENS:
                for prefix in PREFIXES:
                    by = {}
                    for seqs in SEQS:
                        comp = [(tokens // seqs, prefix)] * seqs
                        if not timer.fits(comp):
                            continue
                        by[seqs] = r = profile_composition(engine, timer, comp)
                        top = ", ".join(f"{k[:60]} {v:.0f}" for k, v in list(r["kernel_us_per_step"].items())[: args.top])
                        print(f"graphs={graphs} tokens={tokens} prefix={prefix} seqs={seqs}: wall {1e3 * r['wall_s']:.2f} ms, "
                              f"device {r['device_us_per_step'] / 1e3:.2f} ms (graph={r['graph']}); top µs: {top}", flush=True)
                    lo, hi = by[min(by)], by[max(by)]
                    names = set(lo["kernel_us_per_step"]) | set(hi["kernel_us_per_step"])
                    growth = sorted(((hi["kernel_us_per_step"].get(n, 0.0) - lo["kernel_us_per_step"].get(n, 0.0), n) for n in names), reverse=True)
                    print(f"  grows most {min(by)} -> {max(by)} seqs: " + ", ".join(f"{n[:60]} {g:+.0f} µs" for g, n in growth[:5]), flush=True)
                    res["rows"].append({"graphs": graphs, "tokens": tokens, "prefix_per_seq": prefix,
                                        "by_seqs": by, "growth_us": [{"kernel": n, "us": g} for g, n in growth[:10]]})
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
