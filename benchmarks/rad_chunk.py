"""RAD's prefill chunk under a staircase batch time with a per-batch constant (docs/baselines.md).

Batch time t(b) = c + a·⌈b / 128⌉ with the fit of arXiv 2504.07347 (c = 11.28 ms, a = 35.47 ms).
The token-rate boundary of batches of at most 512 tokens is 512 / t(512); one tile reaches only
128 / t(128). One request type (prompt 256, output 64: 320 tokens of work), Poisson arrivals at
0.95 of the boundary, ample KV memory. For RAD with one-tile chunks and decode batches (the
defaults) and with 512-token ones, and for Sarathi-Serve (chunk 512), it prints the tokens served
per second over the run, as a fraction of the tokens offered, and the work (tokens) still to do
when arrivals stop.

    python benchmarks/rad_chunk.py [--seconds 200]
"""

from __future__ import annotations

import argparse
import platform
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fluid.batch_time import StaircaseBatchTime  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.request import Request  # noqa: E402
from runtime.schedulers import make_scheduler  # noqa: E402
from runtime.sim import simulate  # noqa: E402

STAIRCASE = StaircaseBatchTime(c_s=0.01128, a_s=0.03547, tile_tokens=128)
PROMPT, OUTPUT = 256, 64
LOAD = 0.95


def tokens_per_s(batch_tokens: int) -> float:
    return batch_tokens / (STAIRCASE.c_s + STAIRCASE.a_s * -(-batch_tokens // STAIRCASE.tile_tokens))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=200.0, help="arrival window (s)")
    args = parser.parse_args()
    boundary = tokens_per_s(512)
    rate_per_s = LOAD * boundary / (PROMPT + OUTPUT)
    print(f"machine: {platform.machine()} {platform.processor() or ''}, Python {platform.python_version()}")
    print(f"staircase c={STAIRCASE.c_s * 1e3:.2f} ms a={STAIRCASE.a_s * 1e3:.2f} ms b0=128: "
          f"one tile {tokens_per_s(128):,.0f} tok/s, four tiles {boundary:,.0f} tok/s")
    print(f"arrivals: {rate_per_s:.2f} req/s (prompt {PROMPT}, output {OUTPUT}) = {LOAD} of the 512-token boundary, "
          f"for {args.seconds:.0f} s")
    runs = (
        ("rad (chunk 128, b_col 128)", "rad", {}),
        ("rad (chunk 512, b_col 512)", "rad", {"prefill_chunk_tokens": 512, "b_col": 512, "max_num_seqs": 1024}),
        ("sarathi (chunk 512)", "sarathi", {"max_num_seqs": 1024}),
    )
    print(f"{'policy':<28} {'served tok/s':>13} {'of offered':>11} {'backlog tokens':>15}")
    for label, name, knobs in runs:
        rng = random.Random(0)
        t, requests = 0.0, []
        while True:
            t += rng.expovariate(rate_per_s)
            if t > args.seconds:
                break
            requests.append(Request(len(requests), t, PROMPT, OUTPUT))
        scheduler = make_scheduler(name, KVBlockManager(2_000_000, 16), **knobs)
        result = simulate(scheduler, requests, STAIRCASE, horizon_s=args.seconds)
        served = sum(r.cached_tokens for r in requests)  # tokens computed (no evictions: memory is ample)
        offered = len(requests) * (PROMPT + OUTPUT) / args.seconds
        backlog = sum(r.prompt_tokens + r.output_tokens - r.cached_tokens for r in requests)
        print(f"{label:<28} {served / result.end_s:>13,.0f} {served / result.end_s / offered:>11.3f} {backlog:>15,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
