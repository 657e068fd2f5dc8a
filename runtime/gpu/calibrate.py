"""Calibration: measured step times over a grid, fitted to the batch-time models `fluid/` reads.

The grid (`runtime.gpu.calibration_grid`) covers the operating range of the runs it serves. Each
point is timed as the engine executes a step (`StepTimer`: host preparation, graph replay or eager
forward, sampling, sync). `fluid.batch_time.fit_linear` fits
`affine` and `linear3` (arXiv 2504.11320 §1); `fluid.batch_time_stepwise.fit_stepwise` the
stepwise model with held-out error; the raw rows are kept.

`--from-steps FILE...` adds what recorded live runs did (`recorded_grid`): steps picked per region
from their step logs, each rebuilt from its totals (`runtime.recorded_steps.composition`, the one
home `benchmarks/gpu_replay.py` replays too), timed interleaved in a shuffled order (one execution
per pass, never back to back, as a live run meets them). Their regions are `live-decode`,
`live-prefill`, `live-mixed`, `live-cohort`. A live step also pays the scheduler call and the step
bookkeeping, which the engine's step does not include: a recorded row's time is the engine step
measured here with its input preparation replaced by the recorded host time (scheduler call +
preparation) plus the recorded gap to the next step (`turn_s`). `live_heldout` then fits
without each recorded run and predicts every step of that run (region by region).
"""

from __future__ import annotations

import math

from runtime.gpu.calibration_grid import calibration_grid
from runtime.replay import shape_columns, shape_of

RECORDED_PER_REGION = 40
IDLE_GAP_S = 2e-3  # a gap to the next step longer than this is idle time, not the step's bookkeeping


def turn_s(rows: list[dict], i: int) -> float:
    """What a recorded step cost the loop: its time plus the bookkeeping gap to the next step
    (the median gap of the run where the next step came after idle time or there is none)."""
    r = rows[i]
    gaps = [b["start_s"] - a["start_s"] - a["measured_s"] for a, b in zip(rows, rows[1:]) if "start_s" in a and "start_s" in b]
    busy = sorted(g for g in gaps if 0 <= g < IDLE_GAP_S)
    typical = busy[len(busy) // 2] if busy else 0.0
    gap = gaps[i] if i < len(gaps) else typical
    return r["measured_s"] + (gap if 0 <= gap < IDLE_GAP_S else typical)


def load_recorded(paths) -> dict[str, list[dict]]:
    """{`file:run`: step rows} of recorded step logs (`runtime.recorded_steps.load_steps`)."""
    from pathlib import Path

    from runtime.recorded_steps import load_steps

    return {f"{Path(p).name}:{name}": rows for p in paths for name, rows in load_steps(str(p)).items()}


def recorded_grid(recorded: dict[str, list[dict]], *, per_region: int = RECORDED_PER_REGION) -> list[tuple[str, list, dict]]:
    """(label, composition, recorded row + its turn) of up to `per_region` steps per region."""
    from runtime.recorded_steps import composition, pick, region

    out = []
    for run, index, row in pick(recorded, per_region):
        rec = {"run": run, "index": index, "recorded_s": row["measured_s"], "recorded_turn_s": turn_s(recorded[run], index),
               "recorded_host_s": row.get("host_s")}
        out.append((f"live-{region(row)} {run}#{index}", composition(row), rec))
    return out


def measure_recorded(timer, items, *, passes: int = 3, seed: int = 0) -> list[dict]:
    """Each recorded composition timed once per pass, the order shuffled each pass (no step runs
    right after itself); a row per pass, as `measure_grid` writes them, plus the recorded times."""
    import random

    rows = []
    items = [it for it in items if timer.fits(it[1])]
    for pass_index in range(passes):
        order = list(items)
        random.Random(seed + pass_index).shuffle(order)
        for label, comp, rec in order:
            t, shape = timer.time_s(comp, repeats=1, warmup=0)
            host = rec["recorded_host_s"]
            # the engine step measured here, its preparation replaced by the recorded host time
            # (scheduler call + preparation), plus the recorded bookkeeping gap
            time_s = t - timer.last_host_s + (host if host is not None else timer.last_host_s) + rec["recorded_turn_s"] - rec["recorded_s"]
            rows.append({
                "label": label, "pass": pass_index, "time_s": time_s, "engine_s": t, "host_s": timer.last_host_s, "graph": timer.last_graph,
                **shape_columns(shape), **rec,
            })
    return rows


def live_heldout(rows: list[dict], recorded: dict[str, list[dict]], buckets: dict, *, decode_curve: bool = True) -> dict:
    """For each recorded run: the stepwise model fitted on every row except that run's, against
    every step of that run (its turn: time + bookkeeping gap). Per region and pooled: mean
    absolute relative error and median measured / predicted."""
    from fluid.batch_time_stepwise import fit_coefficients
    from runtime.recorded_steps import region

    per_run, pooled = {}, {}
    for run, steps in recorded.items():
        train = [(shape_of(r), r["time_s"]) for r in rows if r.get("run") != run]
        model = fit_coefficients(train, **buckets, decode_curve=decode_curve)
        by_region: dict[str, list[tuple[float, float]]] = {}
        for i, step in enumerate(steps):
            pred, meas = model.step_time_s(shape_of(step)), turn_s(steps, i)
            by_region.setdefault(region(step), []).append((pred, meas))
            pooled.setdefault(region(step), []).append((pred, meas))
        per_run[run] = {g: _errors(v) for g, v in sorted(by_region.items())}
    return {"per_run": per_run, "pooled": {g: _errors(v) for g, v in sorted(pooled.items())},
            "all": _errors([x for v in pooled.values() for x in v])}


def _errors(pairs) -> dict:
    import statistics

    return {"steps": len(pairs), "mape": statistics.fmean(abs(p - m) / m for p, m in pairs),
            "median_measured_over_predicted": statistics.median(m / p for p, m in pairs)}


def warm_up(timer, grid, seconds: float) -> dict:
    """Untimed steps over the grid for `seconds` before any is timed: on the H200 the first pass of
    a cold grid ran 4.7 % slower than the second for steps under 8 ms (1.9 % over all points;
    `benchmarks/batch_time_heldout.py`), so without it the first pass measures the warm-up."""
    import time

    steps, t0 = 0, time.perf_counter()
    points = [comp for _, comp in grid if timer.fits(comp)]
    while points and time.perf_counter() - t0 < seconds:
        timer.time_s(points[steps % len(points)], repeats=1, warmup=0)
        steps += 1
    return {"seconds": seconds, "steps": steps}


def measure_grid(timer, grid, *, repeats: int = 5, passes: int = 1, wrap_grid=None, probe=None, order_seed: int | None = None) -> list[dict]:
    """Every point timed in each of `passes` passes over the grid (drift shows between passes);
    `wrap_grid` wraps each pass's iterable (a progress bar). Each row records the wall time its
    timing began (`at_s`, to line it up with a GPU clock log) and, with `probe` (a callable such as
    `runtime.gpu.host_info.host_probe`), the host's speed just before it (`host_probe`).
    `order_seed` None: every pass in the grid's order; a seed: each pass in its own shuffled order
    (`pass_order`), so a stretch of time when the machine ran slower falls on different points in
    each pass instead of on one region, and a point's median over the passes drops it."""
    import random
    import time

    rows = []
    for pass_index in range(passes):
        order = list(grid)
        if order_seed is not None:
            random.Random(1000 * order_seed + pass_index).shuffle(order)
        for label, composition in (order if wrap_grid is None else wrap_grid(order)):
            if not timer.fits(composition):
                continue
            seen = probe() if probe is not None else None
            at = time.time()
            t, shape = timer.time_s(composition, repeats=repeats)
            rows.append({
                "label": label, "pass": pass_index, "time_s": t, "host_s": timer.last_host_s, "graph": timer.last_graph,
                **shape_columns(shape), "at_s": at, **({"host_probe": seen} if seen is not None else {}),
            })
    return rows


# a calibration whose passes differ by more than this in some region (median ratio over its points
# timed in both) is flagged: the machine itself ran the same steps at different speeds, and the
# held-out error carries it
PASS_DRIFT_WARN = 0.02


def pass_drift(rows: list[dict]) -> dict | None:
    """How the grid's second pass compares with its first, point by point: the median ratio
    pass 1 / pass 0 over every point timed in both, its mean absolute deviation from 1, and the
    median per region (the label's first word). None with fewer than two passes."""
    import statistics

    by_pass = {(r["label"], r["pass"]): r["time_s"] for r in rows}
    labels = [r["label"] for r in rows if r["pass"] == 0 and (r["label"], 1) in by_pass]
    if not labels:
        return None
    ratio = [by_pass[(label, 1)] / by_pass[(label, 0)] for label in labels]
    regions: dict[str, list[float]] = {}
    for label, x in zip(labels, ratio):
        regions.setdefault(label.split()[0], []).append(x)
    out = {
        "points": len(labels),
        "pass1_over_pass0_median": statistics.median(ratio),
        "pass1_over_pass0_mean_abs_deviation": statistics.fmean(abs(x - 1) for x in ratio),
        "pass1_over_pass0_median_by_region": {k: statistics.median(v) for k, v in regions.items()},
    }
    # with more passes: each pass against the point's median over all of them, by region (which pass was off)
    times: dict[str, dict] = {}
    for r in rows:
        times.setdefault(r["label"], {})[r["pass"]] = r["time_s"]
    passes = sorted({p for t in times.values() for p in t})
    if len(passes) > 2:
        out["pass_over_point_median_by_region"] = {}
        for p in passes:
            ratios: dict[str, list[float]] = {}
            for label, t in times.items():
                if len(t) == len(passes):
                    ratios.setdefault(label.split()[0], []).append(t[p] / statistics.median(t.values()))
            out["pass_over_point_median_by_region"][str(p)] = {k: statistics.median(v) for k, v in ratios.items()}
    # the host's speed beside the same points: a region whose steps sped up while the Python loop
    # did too was the host, one whose steps sped up alone was the GPU (or the state it was left in)
    loop = {(r["label"], r["pass"]): r["host_probe"]["python_loop_1e5_s"] for r in rows if "host_probe" in r}
    if all((label, p) in loop for label in labels for p in (0, 1)):
        by_region: dict[str, list[float]] = {}
        for label in labels:
            by_region.setdefault(label.split()[0], []).append(loop[(label, 1)] / loop[(label, 0)])
        out["host_loop_pass1_over_pass0_median_by_region"] = {k: statistics.median(v) for k, v in by_region.items()}
    return out


def pass_drift_warning(drift: dict | None) -> str | None:
    """The line to print when the passes disagree beyond PASS_DRIFT_WARN in some region (the overall
    median lies between the regions' medians, so a region is always at least as far from 1)."""
    if drift is None:
        return None
    worst_region, worst = max(drift["pass1_over_pass0_median_by_region"].items(), key=lambda kv: abs(kv[1] - 1))
    if abs(worst - 1) <= PASS_DRIFT_WARN:
        return None
    head = (f"the passes disagree: pass 1 / pass 0 median {drift['pass1_over_pass0_median']:.3f}, {worst_region} points "
            f"{worst:.3f} (more than {100 * PASS_DRIFT_WARN:.0f} % apart); the machine ran the same steps at different speeds")
    if "pass_over_point_median_by_region" in drift:  # three or more passes: each point's median drops one slow pass
        return head + ("; a fit on each point's median over the passes (--aggregate median) drops one slow pass, a fit on every "
                       "row (heldout_step_mape_by_row) carries it")
    return head + ", and the held-out error includes it: calibrate again, or with --passes 3 (each point's median is fitted)"


PASS_AGGREGATES = ("rows", "median")
# the default protocol: three passes, each in its own shuffled order, each point fitted as its
# median over them. On H200 runs 18 and 19 it held out 2.57 / 2.90 % where the fit on every row
# held out 3.21 / 3.11 %: a VM's host ran 2× slower for stretches of a pass (docs/benchmarks-gpu.md)
DEFAULT_PASSES = 3
DEFAULT_PASS_ORDER = "shuffled"
# on a GPU each grid point first runs back to back, untimed, this long (`StepTimer.sustain_s`):
# the H200 holds its 700 W cap by lowering the SM clock under sustained compute-heavy steps, and a
# point timed a few repeats at a time with the device idle between points ran faster than in a
# busy loop. Sustained (runs 24, 25), the mixed, chunk, prefill and cohort points ran 2.7-5.2 %
# slower than run 23's unsustained ones and the decode-only points (memory-bound) 0.1-0.7 %, and
# the live mixed steps of vLLM-v1 and Sarathi-Serve at loads 0.8-0.9 ran 0.98-1.01x the model
# instead of 1.01-1.03x (three machines: docs/fidelity-h200-latency-gap.md)
DEFAULT_SUSTAIN_S = 0.25


def default_aggregate(passes: int) -> str:
    """Each point's median where there is more than one pass, every row where there is one."""
    return "median" if passes >= 2 else "rows"


def resolve_aggregate(passes: int, aggregate: str | None) -> str:
    """`aggregate`, or the default for `passes` when None; InputError for a median of one pass."""
    from fluid.errors import InputError

    aggregate = default_aggregate(passes) if aggregate is None else aggregate
    if aggregate == "median" and passes < 2:
        raise InputError(f"--aggregate median takes the median over passes: give --passes 2 or more (3 drops one slow pass), got {passes}",
                         field="passes")
    return aggregate


def aggregate_passes(rows: list[dict]) -> list[dict]:
    """One row per grid point: its median time over the passes (`time_s`, and `host_s` likewise),
    its shape, `pass` "median" and every pass's time in `pass_times_s`, in the order points were
    first timed. Rows of recorded live steps (labels "live-…") stay as they are: each is its own
    step, timed once a pass, and `live_heldout` keys them by run."""
    import statistics

    grouped: dict[str, list[dict]] = {}
    kept = []
    for r in rows:
        if r["label"].startswith("live-"):
            kept.append(r)
        else:
            grouped.setdefault(r["label"], []).append(r)
    out = []
    for group in grouped.values():
        first = group[0]
        row = {k: v for k, v in first.items() if k not in ("at_s", "host_probe")}
        row.update({"pass": "median", "time_s": statistics.median(g["time_s"] for g in group),
                    "pass_times_s": [g["time_s"] for g in sorted(group, key=lambda g: g["pass"])]})
        if all(g.get("host_s") is not None for g in group):
            row["host_s"] = statistics.median(g["host_s"] for g in group)
        out.append(row)
    return out + kept


def fit_rows(rows: list[dict], *, buckets: dict | None = None, decode_curve: bool = True) -> dict:
    """affine and linear3 fits (MAPE, R²), and with the engine's graph `buckets` the stepwise model
    (held-out MAPE per region, its linear3 for the fluid benchmark), by default with the decode
    graphs' GEMM curve (`fluid.batch_time_stepwise`, `decode_knots`)."""
    from fluid.batch_time import fit_linear

    pairs = [(shape_of(r), r["time_s"]) for r in rows]
    fits = {}
    for kind in ("affine", "linear3"):
        report = fit_linear(pairs, kind)
        fits[kind] = {"batch_time": report.model.to_dict(), "mape": report.mape, "r2": report.r2, "num_rows": report.num_rows}
    if buckets is not None:
        from fluid.batch_time_stepwise import fit_stepwise

        fits["stepwise"] = fit_stepwise([(shape_of(r), r["time_s"], r["label"]) for r in rows], **buckets, decode_curve=decode_curve).to_dict()
    return fits


def file_buckets(stepwise: dict) -> dict:
    """The graph buckets a stored stepwise model was fitted with (its `batch_time_stepwise` dict), as
    `engine_buckets` gives them: what a refit of that calibration's rows needs."""
    return {k: tuple(stepwise[k]) if isinstance(stepwise[k], list) else stepwise[k]
            for k in ("decode_buckets", "token_buckets", "max_prefills", "max_decodes")}


def engine_buckets(engine) -> dict:
    """The graph buckets the stepwise model needs (empty when the engine runs every step eagerly)."""
    g, m = engine.graphs, engine.mixed_graphs
    return {
        "decode_buckets": tuple(g.buckets) if g is not None else (),
        "token_buckets": tuple(m.buckets) if m is not None else (),
        "max_prefills": m.max_prefills if m is not None else 0,
        "max_decodes": m.max_decodes if m is not None else 0,
    }


def calibrate_engine(engine, info, *, model: str, grid_scale: float = 1.0, repeats: int = 5, passes: int = 2, wrap_grid=None, grid=None,
                     from_steps=(), per_region: int = RECORDED_PER_REGION, recorded_passes: int = 3, warmup_s: float = 0.0,
                     pass_order: str = "grid", aggregate: str = "rows", sustain_s: float = 0.0) -> dict:
    # (the library keeps the plain protocol; `fluidsched calibrate` and gpu_fidelity.py default to
    # DEFAULT_PASSES / DEFAULT_PASS_ORDER / default_aggregate)
    """Measure the grid on `engine` and fit every model: the calibration file's content.
    `wrap_grid` may wrap the grid's iterable (a progress bar); `grid` replaces
    `calibration_grid(grid_scale)` (a smoke test's few points); `from_steps` adds the steps of
    recorded live runs (`recorded_grid`, timed by `measure_recorded`) and the held-out-by-run
    error on them (`live_heldout`); `warmup_s` seconds of untimed grid steps go first (`warm_up`).
    `pass_order` "shuffled" times each pass in its own order (`measure_grid`); `aggregate`
    "median" fits one row per point, its median over the passes (`aggregate_passes`), instead of
    every pass's row: the held-out error is then that of the point's typical time, and the
    per-row figure is kept beside it (`heldout_step_mape_by_row`). `sustain_s`: each grid point
    runs back to back for that long, untimed, before it is timed (`StepTimer`: the power state of
    a busy loop)."""
    from fluid.errors import InputError
    from runtime.gpu.host_info import describe_host, host_probe, versions
    from runtime.gpu.step_timer import StepTimer

    grid = calibration_grid(grid_scale) if grid is None else grid
    if not (math.isfinite(sustain_s) and sustain_s >= 0):
        raise InputError(f"sustain must be a finite number of seconds ≥ 0, got {sustain_s}", field="sustain_s")
    timer = StepTimer(engine)
    warmed = warm_up(timer, grid, warmup_s)
    timer.sustain_s = sustain_s  # the grid's points only: the warm-up and the recorded steps as before
    if pass_order not in ("grid", "shuffled"):
        raise InputError(f"pass order must be 'grid' or 'shuffled', got {pass_order!r}", field="pass_order")
    if aggregate not in PASS_AGGREGATES:
        raise InputError(f"pass aggregate must be one of {', '.join(PASS_AGGREGATES)}, got {aggregate!r}", field="aggregate")
    rows = measure_grid(timer, grid, repeats=repeats, passes=passes, wrap_grid=wrap_grid, probe=host_probe,
                        order_seed=0 if pass_order == "shuffled" else None)
    if len(rows) < 20:
        raise InputError(f"only {len(rows)} grid points fit a pool of {info.kv_capacity_tokens} tokens; raise --kv-tokens", field="kv_tokens")
    sustained = {"seconds_per_point": sustain_s, "steps": timer.sustained_steps}
    timer.sustain_s = 0.0
    recorded = load_recorded(from_steps) if from_steps else {}
    if recorded:
        rows += measure_recorded(timer, recorded_grid(recorded, per_region=per_region), passes=recorded_passes)
    buckets = engine_buckets(engine)
    fitted = aggregate_passes(rows) if aggregate == "median" else rows
    fits = fit_rows(fitted, buckets=buckets)
    stepwise = fits["stepwise"]
    by_row = stepwise["heldout_mape"] if fitted is rows else fit_rows(rows, buckets=buckets)["stepwise"]["heldout_mape"]
    if recorded:
        fits["live_heldout_by_run"] = live_heldout(fitted, recorded, buckets)
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
        # the same stepwise fit on every pass's row: the machine's pass-to-pass drift included
        "heldout_step_mape_by_row": by_row,
        "passes": passes, "pass_order": pass_order, "pass_aggregate": aggregate,
        "from_steps": [str(p) for p in from_steps],
        "warmup": warmed,
        "sustain": sustained,
        "pass_drift": pass_drift(rows),
        "fits": fits,
        "table": rows,
        **({"fit_table": fitted} if fitted is not rows else {}),
    }
