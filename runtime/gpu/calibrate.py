"""Calibration: measured step times over a grid, fitted to the batch-time models `fluid/` reads.

The grid covers the three regimes of the linear model τ = d0 + d_kv·KV + d_new·new (arXiv
2504.11320, the serving model; mixed batches per arXiv 2504.07347): prefill chunks of growing size (d_new),
decode batches × context (d_kv and d0), and mixed steps. `fluid.batch_time.fit_linear` fits the
`affine` and `linear3` forms with MAPE and R²; the raw rows are kept as a table model.
"""

from __future__ import annotations

PREFILL_CHUNKS = (16, 64, 128, 256, 512, 1024, 2048, 4096)
DECODE_BATCHES = (1, 8, 32, 64, 128, 256)
DECODE_CONTEXTS = (128, 512, 1024, 2048)
MIXED = ((16, 512, 256), (64, 512, 256), (16, 512, 1024), (64, 1024, 512), (32, 256, 2048))  # (decodes, ctx, chunk)


def calibration_grid(scale: float = 1.0) -> list[tuple[str, list[tuple[int, int]]]]:
    """(label, composition) pairs; `scale` < 1 shrinks token counts for tiny CPU models."""

    def s(x: int) -> int:
        return max(1, int(x * scale))

    grid = [(f"prefill {s(n)}", [(s(n), 0)]) for n in PREFILL_CHUNKS]
    grid.append((f"prefill {s(512)} after {s(1536)}", [(s(512), s(1536))]))
    for b in DECODE_BATCHES:
        for ctx in DECODE_CONTEXTS:
            grid.append((f"decode {b}x{s(ctx)}", [(1, s(ctx))] * b))
    for b, ctx, chunk in MIXED:
        grid.append((f"mixed {b}x{s(ctx)} + {s(chunk)}", [(1, s(ctx))] * b + [(s(chunk), 0)]))
    return grid


def measure_grid(timer, grid, *, repeats: int = 5) -> list[dict]:
    rows = []
    for label, composition in grid:
        if not timer.fits(composition):
            continue
        t, shape = timer.time_s(composition, repeats=repeats)
        rows.append({
            "label": label, "time_s": t, "new_tokens": shape.new_tokens, "kv_tokens": shape.kv_tokens,
            "num_decodes": shape.num_decodes, "num_prefills": shape.num_prefills, "prefill_attention_pairs": shape.prefill_attention_pairs,
        })
    return rows


def fit_rows(rows: list[dict]) -> dict:
    from fluid.batch_time import BatchShape, fit_linear

    pairs = [(BatchShape(r["new_tokens"], r["kv_tokens"], r["num_decodes"], r["num_prefills"], r["prefill_attention_pairs"]), r["time_s"]) for r in rows]
    fits = {}
    for kind in ("affine", "linear3"):
        report = fit_linear(pairs, kind)
        fits[kind] = {"batch_time": report.model.to_dict(), "mape": report.mape, "r2": report.r2, "num_rows": report.num_rows}
    return fits
