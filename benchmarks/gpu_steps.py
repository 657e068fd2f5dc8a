"""Prefill and mixed steps on the GPU engine: flat in their number of sequences, close to device time.

    PYTHONPATH=. python benchmarks/gpu_steps.py --out docs/bench-steps-h200.json

Two measurements (Llama-2-7B shape, bf16, random weights), each step timed as the engine executes
it (`StepTimer`: host preparation, graph replay or eager forward, sampling, sync; median of 10):
- flatness: a fixed token count (512, 2048) split into 1, 2, 4, 8, 16, 32 prefill sequences, with
  and without a cached prefix per sequence, the splits timed round robin; target: 1 to 32
  sequences within 10 %.
- step over device time: prefill, chunked-prefill and mixed steps up to 2,048 new tokens; device
  time is the replay of the step's CUDA graph timed with CUDA events, back to back (the graph of
  the bucket the step was padded to, so padding counts as device work); target median ≤ 1.1×.
Both are taken with the prefill / mixed graphs on and, for comparison, off (eager steps, the
variable-length attention kernel still one launch per layer). Also imported by `gpu_fidelity.py`,
which runs them on the machine of its loop.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from runtime.gpu.step_timer import cuda_event_time_s

FLAT_TOKENS = (512, 2048)
FLAT_SEQS = (1, 2, 4, 8, 16, 32)
# (label, composition [(new tokens, context)]) up to 2,048 new tokens
STEP_SHAPES = (
    ("prefill 128", [(128, 0)]),
    ("prefill 512", [(512, 0)]),
    ("prefill 2048", [(2048, 0)]),
    ("cohort 18x48", [(48, 0)] * 18),
    ("cohort 32x64", [(64, 0)] * 32),
    ("chunk 512 after 1536", [(512, 1536)]),
    ("chunk 256 after 3000", [(256, 3000)]),
    ("mixed sarathi 124x512 + 4x48", [(1, 512)] * 124 + [(48, 0)] * 4),
    ("mixed sarathi 64x96 + 448 after 256", [(1, 96)] * 64 + [(448, 256)]),
    ("mixed vllm 200x64 + 2x48", [(1, 64)] * 200 + [(48, 0)] * 2),
    ("mixed wait 100x60 + 18x48", [(1, 60)] * 100 + [(48, 0)] * 18),
    ("mixed 32x256 + 2048", [(1, 256)] * 32 + [(2016, 0)]),
)


def _graph_of_last_step(engine, composition):
    """The CUDA graph the engine replayed for `composition` (its buffers still hold that step), or None."""
    d = sum(1 for n, ctx in composition if n == 1 and ctx > 0)
    p = len(composition) - d
    tokens = sum(n for n, _ in composition)
    if p == 0 and engine.graphs is not None and engine.graphs.bucket_for(d):
        return engine.graphs._graphs[engine.graphs.bucket_for(d)][0]
    if engine.mixed_graphs is not None:
        b = engine.mixed_graphs.bucket_for(tokens, p, d)
        if b is not None:
            return engine.mixed_graphs._graphs[b][0]
    return None


def _with_mixed_graphs(engine, on: bool):
    saved = engine.mixed_graphs

    class _Ctx:
        def __enter__(self):
            if not on:
                engine.mixed_graphs = None

        def __exit__(self, *exc):
            engine.mixed_graphs = saved

    return _Ctx()


def flatness(engine, timer, *, repeats: int = 10) -> dict:
    out = {}
    for graphs in (True, False):
        rows = []
        with _with_mixed_graphs(engine, graphs):
            for tokens in FLAT_TOKENS:
                for prefix in (0, 256):
                    # round robin over the splits: the device slows under sustained load, which timed
                    # one split after another charged to the last ones (docs/benchmarks-gpu.md)
                    comps = {seqs: [(tokens // seqs, prefix)] * seqs for seqs in FLAT_SEQS}
                    comps = {s: c for s, c in comps.items() if timer.fits(c)}
                    times = dict(zip(comps, timer.time_interleaved_s(list(comps.values()), repeats=repeats)))
                    spread = max(v["step_s"] for v in times.values()) / min(v["step_s"] for v in times.values()) - 1
                    rows.append({"tokens": tokens, "prefix_per_seq": prefix, "by_seqs": times, "spread": spread, "target": "≤ 0.10"})
                    print(f"flat graphs={graphs} tokens={tokens} prefix={prefix}: " + ", ".join(f"{s}:{1e3 * v['step_s']:.2f}ms" for s, v in times.items()) + f"  spread {100 * spread:.1f} %", flush=True)
        out["graphs_on" if graphs else "graphs_off"] = rows
    return out


def step_vs_device(engine, timer, *, repeats: int = 10) -> dict:
    rows = []
    for label, comp in STEP_SHAPES:
        if not timer.fits(comp):
            continue
        row = {"label": label, "new_tokens": sum(n for n, _ in comp), "sequences": len(comp)}
        with _with_mixed_graphs(engine, False):
            row["eager_step_s"], _ = timer.time_s(comp, repeats=repeats)
            row["eager_host_s"] = timer.last_host_s
        row["step_s"], _ = timer.time_s(comp, repeats=repeats)
        row["host_s"], row["graph"] = timer.last_host_s, timer.last_graph
        graph = _graph_of_last_step(engine, comp)
        row["device_s"] = cuda_event_time_s(graph.replay) if graph is not None and row["graph"] else None
        row["step_over_device"] = row["step_s"] / row["device_s"] if row["device_s"] else None
        row["eager_over_device"] = row["eager_step_s"] / row["device_s"] if row["device_s"] else None
        rows.append(row)
        ratio = f"{row['step_over_device']:.3f}" if row["step_over_device"] else "n/a"
        print(f"{label:38s} step {1e3 * row['step_s']:8.2f} ms  device {1e3 * (row['device_s'] or 0):8.2f} ms  "
              f"ratio {ratio}  eager {1e3 * row['eager_step_s']:8.2f} ms  graph={row['graph']}", flush=True)
    ratios = [r["step_over_device"] for r in rows if r["step_over_device"]]
    return {"rows": rows, "median_step_over_device": statistics.median(ratios) if ratios else None, "target": "median ≤ 1.1"}


def build_engine(model: str = "llama-2-7b", kv_tokens: int | None = 200_000, device: str = "cuda"):
    from runtime.gpu.setup import build_engine as build

    return build(model, kv_tokens=kv_tokens, device=device)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/bench-steps.json")
    ap.add_argument("--model", default="llama-2-7b")
    args = ap.parse_args()
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.step_timer import StepTimer

    engine, info = build_engine(args.model)
    timer = StepTimer(engine)
    from runtime.gpu.attention import PREFILL_TILES, SHORT_CHUNK_TOKENS, SHORT_TILES

    res = {"device": info.device_name, "versions": versions(), "host": describe_host(), "model": args.model,
           "command": "PYTHONPATH=. python benchmarks/gpu_steps.py " + " ".join(sys.argv[1:]),
           "varlen_prefill_tiling": PREFILL_TILES.spec(), "varlen_short_tiling": SHORT_TILES.spec(), "short_chunk_tokens": SHORT_CHUNK_TOKENS}
    res["flatness"] = flatness(engine, timer)
    res["step_vs_device"] = step_vs_device(engine, timer)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
