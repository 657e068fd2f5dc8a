"""The calibration grid: the step compositions `runtime.gpu.calibrate` times, over the operating
range of the runs it serves. Prefill chunks of growing size, WAIT's cohorts of many prompts, chunks
on a cached prefix, decode batches × context (down to the loop's 48–96-token contexts, and past
the largest decode graph), contexts on both sides of the decode attention's 64-key tile edges, and
the mixed steps Sarathi-Serve, vLLM-v1 and WAIT build. A composition is a list of
(new tokens, cached context) per sequence (`runtime.gpu.step_timer`). Torch-free.
"""

from __future__ import annotations

PREFILL_CHUNKS = (16, 48, 128, 256, 512, 1024, 2048, 4096)
DECODE_BATCHES = (1, 4, 16, 32, 64, 128, 192, 256, 320)  # 320: past the largest decode graph (eager)
DECODE_CONTEXTS = (48, 96, 256, 512, 1024, 2048)  # the loop's chat types sit at 48-96
# decode graphs the live runs use between the batches above, at the loop's contexts only (cuBLAS
# picks another GEMM kernel per graph size: H200 run 5 live decode steps at 8 / 48 / 96 / 128 rows
# ran 0.94 / 1.05 / 0.97 / 0.93 of the model interpolated from their neighbours, docs/fidelity-h200-latency.md)
DECODE_BATCHES_BETWEEN = (8, 24, 48, 96)
DECODE_CONTEXTS_BETWEEN = (48, 96, 256)
COHORTS = ((2, 48), (4, 48), (8, 48), (16, 48), (32, 48), (48, 48), (4, 256), (8, 256))  # (prompts, tokens each): WAIT's cohorts
# (chunk, cached prefix); four points held the region's held-out error at 8.1 % (H200 run 5)
CHUNKS_ON_PREFIX = ((512, 1536), (256, 512), (128, 3000), (48, 48), (48, 512), (128, 256), (256, 1536), (512, 512), (384, 2048))
# mixed steps as the schedulers build them: (decodes, their context, prefill chunks, tokens each, prefix)
MIXED = (
    (16, 96, 1, 496, 256), (64, 96, 1, 448, 256), (128, 512, 1, 384, 512), (256, 96, 1, 256, 0),  # Sarathi: budget 512
    (32, 64, 4, 48, 0), (124, 64, 4, 48, 0), (128, 96, 8, 48, 0), (64, 64, 16, 48, 0), (200, 64, 2, 48, 0),  # vLLM-v1
    (100, 60, 18, 48, 0), (40, 80, 32, 48, 0),  # WAIT: a cohort beside running decodes
    (16, 512, 1, 256, 0), (64, 1024, 1, 512, 0), (32, 256, 1, 2048, 0),
    (48, 64, 1, 48, 0), (96, 64, 1, 48, 0), (72, 64, 3, 48, 0),  # vLLM-v1 / Sarathi at loads 0.8-0.9: tokens 96-256
)
# a decode's attention walks its keys 64 at a time (`fluid.batch_time.decode_key_tiles`), a staircase
# the KV-token slope cannot follow: contexts on both sides of the tile edges. Alone a decode at
# context 63 walks 1 tile, 64-127 walk 2, 128 walks 3; beside a prefill 64 walks 2 and 65-128 walk 3,
# where the live decodes of vLLM-v1 and Sarathi-Serve near capacity sit (contexts about 67-70: H200
# runs 20-22, without these points and the tile term, ran them 1.03-1.07x the model,
# docs/fidelity-h200-latency-gap.md)
DECODE_TILE_BATCHES = (32, 64, 96, 128)
DECODE_TILE_CONTEXTS = (63, 64, 127, 128)
MIXED_TILE = tuple((d, ctx, p, 48, 0) for d in (80, 96, 112) for p in (1, 2, 3) for ctx in (64, 70)) + (
    (96, 63, 1, 48, 0), (96, 128, 1, 48, 0), (96, 129, 1, 48, 0))


def calibration_grid(scale: float = 1.0) -> list[tuple[str, list[tuple[int, int]]]]:
    """(label, composition) pairs; a label's first word is its region. `scale` < 1 shrinks token
    counts for tiny CPU models."""

    def s(x: int) -> int:
        return max(1, int(x * scale)) if x else 0  # a fresh prompt keeps no prefix

    grid = [(f"prefill {s(n)}", [(s(n), 0)]) for n in PREFILL_CHUNKS]
    grid += [(f"cohort {p}x{s(n)}", [(s(n), 0)] * p) for p, n in COHORTS]
    grid += [(f"chunk {s(n)} after {s(ctx)}", [(s(n), s(ctx))]) for n, ctx in CHUNKS_ON_PREFIX]
    decode = [(b, ctx) for b in DECODE_BATCHES for ctx in DECODE_CONTEXTS]
    decode += [(b, ctx) for b in DECODE_BATCHES_BETWEEN for ctx in DECODE_CONTEXTS_BETWEEN]
    decode += [(b, ctx) for b in DECODE_TILE_BATCHES for ctx in DECODE_TILE_CONTEXTS]
    for b, ctx in sorted(set(decode)):
        grid.append((f"decode {b}x{s(ctx)}", [(1, s(ctx))] * b))
    for d, ctx, p, n, prefix in dict.fromkeys(MIXED + MIXED_TILE):  # in order, each point once
        grid.append((f"mixed {d}x{s(ctx)} + {p}x{s(n)} after {s(prefix)}", [(1, s(ctx))] * d + [(s(n), s(prefix))] * p))
    return grid
