"""Calibration: measured step times over a grid, fitted to the batch-time models `fluid/` reads.

The grid covers the operating range of the runs it serves: prefill chunks of growing size, WAIT's
cohorts of many prompts, chunks on a cached prefix, decode batches × context (down to the loop's
48–96-token contexts, and past the largest decode graph), and the mixed steps Sarathi-Serve,
vLLM-v1 and WAIT build. Each point is timed as the engine executes a step (`StepTimer`: host
preparation, graph replay or eager forward, sampling, sync). `fluid.batch_time.fit_linear` fits
`affine` and `linear3` (arXiv 2504.11320 §1); `fluid.batch_time_stepwise.fit_stepwise` the
stepwise model with held-out error; the raw rows are kept.
"""

from __future__ import annotations

PREFILL_CHUNKS = (16, 48, 128, 256, 512, 1024, 2048, 4096)
DECODE_BATCHES = (1, 4, 16, 32, 64, 128, 192, 256, 320)  # 320: past the largest decode graph (eager)
DECODE_CONTEXTS = (48, 96, 256, 512, 1024, 2048)  # the loop's chat types sit at 48-96
COHORTS = ((2, 48), (4, 48), (8, 48), (16, 48), (32, 48), (48, 48), (4, 256), (8, 256))  # (prompts, tokens each): WAIT's cohorts
CHUNKS_ON_PREFIX = ((512, 1536), (256, 512), (128, 3000), (48, 48))  # (chunk, cached prefix)
# mixed steps as the schedulers build them: (decodes, their context, prefill chunks, tokens each, prefix)
MIXED = (
    (16, 96, 1, 496, 256), (64, 96, 1, 448, 256), (128, 512, 1, 384, 512), (256, 96, 1, 256, 0),  # Sarathi: budget 512
    (32, 64, 4, 48, 0), (124, 64, 4, 48, 0), (128, 96, 8, 48, 0), (64, 64, 16, 48, 0), (200, 64, 2, 48, 0),  # vLLM-v1
    (100, 60, 18, 48, 0), (40, 80, 32, 48, 0),  # WAIT: a cohort beside running decodes
    (16, 512, 1, 256, 0), (64, 1024, 1, 512, 0), (32, 256, 1, 2048, 0),
)


def calibration_grid(scale: float = 1.0) -> list[tuple[str, list[tuple[int, int]]]]:
    """(label, composition) pairs; a label's first word is its region. `scale` < 1 shrinks token
    counts for tiny CPU models."""

    def s(x: int) -> int:
        return max(1, int(x * scale)) if x else 0  # a fresh prompt keeps no prefix

    grid = [(f"prefill {s(n)}", [(s(n), 0)]) for n in PREFILL_CHUNKS]
    grid += [(f"cohort {p}x{s(n)}", [(s(n), 0)] * p) for p, n in COHORTS]
    grid += [(f"chunk {s(n)} after {s(ctx)}", [(s(n), s(ctx))]) for n, ctx in CHUNKS_ON_PREFIX]
    for b in DECODE_BATCHES:
        for ctx in DECODE_CONTEXTS:
            grid.append((f"decode {b}x{s(ctx)}", [(1, s(ctx))] * b))
    for d, ctx, p, n, prefix in MIXED:
        grid.append((f"mixed {d}x{s(ctx)} + {p}x{s(n)} after {s(prefix)}", [(1, s(ctx))] * d + [(s(n), s(prefix))] * p))
    return grid


def measure_grid(timer, grid, *, repeats: int = 5, passes: int = 1, wrap_grid=None) -> list[dict]:
    """Every point timed in each of `passes` passes over the grid (drift shows between passes);
    `wrap_grid` wraps each pass's iterable (a progress bar)."""
    rows = []
    for pass_index in range(passes):
        for label, composition in (grid if wrap_grid is None else wrap_grid(grid)):
            if not timer.fits(composition):
                continue
            t, shape = timer.time_s(composition, repeats=repeats)
            rows.append({
                "label": label, "pass": pass_index, "time_s": t, "host_s": timer.last_host_s, "graph": timer.last_graph,
                "new_tokens": shape.new_tokens, "kv_tokens": shape.kv_tokens, "num_decodes": shape.num_decodes,
                "num_prefills": shape.num_prefills, "prefill_attention_pairs": shape.prefill_attention_pairs,
            })
    return rows


def _shape(r: dict):
    from fluid.batch_time import BatchShape

    return BatchShape(r["new_tokens"], r["kv_tokens"], r["num_decodes"], r["num_prefills"], r["prefill_attention_pairs"])


def fit_rows(rows: list[dict], *, buckets: dict | None = None) -> dict:
    """affine and linear3 fits (MAPE, R²), and with the engine's graph `buckets` the stepwise model
    (held-out MAPE per region, its linear3 for the fluid benchmark)."""
    from fluid.batch_time import fit_linear

    pairs = [(_shape(r), r["time_s"]) for r in rows]
    fits = {}
    for kind in ("affine", "linear3"):
        report = fit_linear(pairs, kind)
        fits[kind] = {"batch_time": report.model.to_dict(), "mape": report.mape, "r2": report.r2, "num_rows": report.num_rows}
    if buckets is not None:
        from fluid.batch_time_stepwise import fit_stepwise

        fits["stepwise"] = fit_stepwise([(_shape(r), r["time_s"], r["label"]) for r in rows], **buckets).to_dict()
    return fits


def engine_buckets(engine) -> dict:
    """The graph buckets the stepwise model needs (empty when the engine runs every step eagerly)."""
    g, m = engine.graphs, engine.mixed_graphs
    return {
        "decode_buckets": tuple(g.buckets) if g is not None else (),
        "token_buckets": tuple(m.buckets) if m is not None else (),
        "max_prefills": m.max_prefills if m is not None else 0,
        "max_decodes": m.max_decodes if m is not None else 0,
    }


def calibrate_engine(engine, info, *, model: str, grid_scale: float = 1.0, repeats: int = 5, passes: int = 2, wrap_grid=None, grid=None) -> dict:
    """Measure the grid on `engine` and fit every model: the calibration file's content.
    `wrap_grid` may wrap the grid's iterable (a progress bar); `grid` replaces
    `calibration_grid(grid_scale)` (a smoke test's few points)."""
    from fluid.errors import InputError
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.step_timer import StepTimer

    grid = calibration_grid(grid_scale) if grid is None else grid
    rows = measure_grid(StepTimer(engine), grid, repeats=repeats, passes=passes, wrap_grid=wrap_grid)
    if len(rows) < 20:
        raise InputError(f"only {len(rows)} grid points fit a pool of {info.kv_capacity_tokens} tokens; raise --kv-tokens", field="kv_tokens")
    fits = fit_rows(rows, buckets=engine_buckets(engine))
    stepwise = fits["stepwise"]
    return {
        "device": info.device_name,
        "model": model,
        "dtype": str(engine.runner.dtype).replace("torch.", ""),
        "versions": versions(),
        "host": describe_host(),
        "kv_capacity_tokens": info.kv_capacity_tokens,
        "block_size": engine.block_size,
        "cuda_graphs": engine.graphs is not None,
        "mixed_cuda_graphs": engine.mixed_graphs is not None,
        # the fluid benchmark's linear model: linear3 fitted to the stepwise model over the grid
        "batch_time": {"kind": "linear3", **stepwise["batch_time"]["linear"]},
        "batch_time_stepwise": stepwise["batch_time"],
        "heldout_step_mape": stepwise["heldout_mape"],
        "fits": fits,
        "table": rows,
    }
