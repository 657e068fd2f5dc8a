"""Why live steps run slower than their calibration: a window of a recorded live run's steps
replayed on the engine in order, once as the calibration times steps and once as the overlapped
loop runs them, against the engine-step model and against the times recorded live.

    PYTHONPATH=. python benchmarks/live_gap_probe.py RUN/live-steps.json.gz RUN/calibration.json --out probe.json

Run it on the machine that recorded the steps, right after the run (`gpu_fidelity.py --out-dir
RUN`): at the same compositions the live overlapped steps of the H200 runs 20 and 21 took
1.02-1.08× what the calibration measured (`docs/fidelity-h200-run21.md`), with no step waiting on
the host. Each window is replayed in four ways, in this order:

- `execute`: `Engine.execute` step after step, host preparation inside each step's time and the
  device idle meanwhile (how `fluidsched calibrate` times a grid point);
- `overlapped`: step k + 1 prepared while step k runs, then step k collected and k + 1 launched,
  the step's time from one collect to the next (how `Engine.run(overlap_host=True)` runs and logs
  steps: no idle device between steps);
- `overlapped_scattered`: the same with the pool's free blocks shuffled first, so each sequence's
  blocks lie scattered over the pool as after hours of allocations, not side by side as in a
  fresh calibration;
- `execute_again`: `execute` once more, blocks side by side again (a device that drifted through
  the probe shows here);
- `repeated`: each step 2 + 5 times in a row, the median of the 5 (how `fluidsched calibrate`
  times a grid point: every timed step follows itself);
- `interleaved`: a group's steps round robin, 1 + 5 rounds, each step's median (no step follows
  itself, as in a live run).

The compositions are rebuilt from the recorded totals (`runtime.recorded_steps.composition`, as
`gpu_replay.py` does). The batches of a window are built a group at a time (as many as the pool
holds at once); a group's first step comes after that build and is left out of the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

MODES = ("execute", "overlapped", "overlapped_scattered", "execute_again")
TIMINGS = ("repeated", "interleaved")


def _groups(timer, comps: list, share: float = 0.8) -> list[list]:
    """Consecutive compositions in groups whose blocks fit `share` of the pool together."""
    cap = share * timer.kv.num_blocks
    groups, cur, used = [], [], 0
    for c in comps:
        need = sum(timer.kv.blocks_for_tokens(n + ctx) for n, ctx, _ in c)
        if cur and used + need > cap:
            groups.append(cur)
            cur, used = [], 0
        cur.append(c)
        used += need
    return groups + ([cur] if cur else [])


def _replay(engine, batches: list, overlapped: bool) -> list[float]:
    """Each batch's step time, in order (the first of the group included: the caller drops it)."""
    times = []
    if not overlapped:
        for b in batches:
            t = time.perf_counter()
            engine.execute(b)
            times.append(time.perf_counter() - t)
        return times
    t_prev = time.perf_counter()
    handle = engine.launch(engine.prepare(batches[0]))
    for b in batches[1:]:
        prepared = engine.prepare(b)  # while the step before runs
        engine.collect(handle)
        t = time.perf_counter()
        times.append(t - t_prev)
        t_prev = t
        handle = engine.launch(prepared)
    engine.collect(handle)
    times.append(time.perf_counter() - t_prev)
    return times


def _timed(engine, timer, batches: list, mode: str) -> list[float]:
    """Each held batch's step time under `mode` (see the module docstring)."""
    if mode == "repeated":  # `StepTimer.time_s`'s way: 2 + 5 in a row, the median of the 5
        return [timer._medians(timer._timed([b], 5, 2)[0])["step_s"] for b in batches]
    if mode == "interleaved":  # `StepTimer.time_interleaved_s`'s way: round robin, 1 + 5 rounds
        return [timer._medians(reps)["step_s"] for reps in timer._timed(batches, 5, 1)]
    engine.execute(batches[0])  # the group's first batch once untimed: its build's gap and any first-use cost
    return _replay(engine, batches, mode.startswith("overlapped"))


def _summary(rows, times, keep, execute_times, model, clocks: dict, seconds: float) -> dict:
    """Per region: the median of step time over the model, over the live time and over the same
    step's `execute` time (group first steps left out)."""
    from runtime.recorded_steps import region
    from runtime.replay import shape_of

    ratios: dict[str, list] = {}
    for r, t, e, k in zip(rows, times, execute_times, keep):
        if k:
            ratios.setdefault(region(r), []).append((t / model.step_time_s(shape_of(r)), t / r["measured_s"], t / e))
    by_region = {g: {"steps": len(v), **{name: statistics.median(x[i] for x in v) for i, name in
                                          enumerate(("median_over_model", "median_over_live", "median_over_execute"))}}
                 for g, v in sorted(ratios.items())}
    return {"by_region": by_region, "gpu_clocks": clocks, "seconds": seconds, "times": times}


def probe_window(engine, timer, rows: list[dict], model, log) -> dict:
    from runtime.recorded_steps import composition, region
    from runtime.replay import shape_of

    groups = _groups(timer, [composition(r) for r in rows])
    keep = [k for g in groups for k in [False] + [True] * (len(g) - 1)]  # a group's first step follows its build
    out = {"steps": len(rows), "groups": len(groups)}
    fresh_order = list(timer.kv._free_ids)
    timed = {}
    for mode in MODES + TIMINGS:
        timer.kv._free_ids = list(fresh_order)  # every group releases all it took: the same free set
        if mode == "overlapped_scattered":
            random.Random(0).shuffle(timer.kv._free_ids)
        t0, times = time.time(), []
        for g in groups:
            with timer.holding(g) as batches:
                times += _timed(engine, timer, batches, mode)
        timed[mode] = (times, log.window(t0, time.time()), time.time() - t0)
    for mode, (times, clocks, seconds) in timed.items():
        out[mode] = _summary(rows, times, keep, timed["execute"][0], model, clocks, seconds)
    live: dict[str, list] = {}
    for r in rows:
        live.setdefault(region(r), []).append(r["measured_s"] / model.step_time_s(shape_of(r)))
    out["live"] = {g: {"steps": len(v), "median_over_model": statistics.median(v)} for g, v in sorted(live.items())}
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("steps", type=Path, help="a run's live-steps.json.gz (gpu_fidelity.py) or docs/fidelity-*-steps.json.gz")
    ap.add_argument("calibration", type=Path, help="the same run's calibration.json (its engine-step model)")
    ap.add_argument("--runs", default="wait-L0.90,vllm-v1-L0.90,sarathi-L0.90,vllm-v1-L0.50")
    ap.add_argument("--window", type=int, default=240, help="steps per run, from a third of the way in")
    ap.add_argument("--out", type=Path, default=Path("live-gap-probe.json"))
    ap.add_argument("--model", default="llama-2-7b", help="tiny-llama with --device cpu: a smoke test")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    from fluid.batch_time import batch_time_from_dict
    from runtime.recorded_steps import composition, load_steps

    try:
        steps = load_steps(str(args.steps))
        cal = json.loads(args.calibration.read_text())
        model = batch_time_from_dict(cal.get("engine_step_model", cal["batch_time_stepwise"]), source=str(args.calibration))
        runs = [r for r in args.runs.split(",") if r]
        missing = [r for r in runs if r not in steps]
        if missing:
            raise ValueError(f"{args.steps} has no run {', '.join(missing)} (it has {', '.join(steps)})")
        if args.window < 2:
            raise ValueError(f"--window must be at least 2 steps, got {args.window}")
    except (OSError, KeyError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_steps import build_engine

    from runtime.gpu.clock_log import GpuClockLog
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.step_timer import StepTimer

    engine, info = build_engine(args.model, device=args.device)
    timer = StepTimer(engine)
    res = {"device": info.device_name, "versions": versions(), "host": describe_host(),
           "command": "PYTHONPATH=. python benchmarks/live_gap_probe.py " + " ".join(sys.argv[1:] if argv is None else argv),
           "window": args.window, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp, GpuClockLog(Path(tmp) / "clocks.csv", period_ms=100) as log:
        for name in runs:
            rows = steps[name]
            start = len(rows) // 3
            window = [r for r in rows[start : start + args.window] if timer.fits(composition(r))]
            res["runs"][name] = r = probe_window(engine, timer, window, model, log)
            for mode in ("live",) + MODES + TIMINGS:
                regions = r[mode] if mode == "live" else r[mode]["by_region"]
                print(f"{name:14s} {mode:22s} " + "  ".join(f"{g} {v['median_over_model']:.3f}" + (f" (live {v['median_over_live']:.3f}, execute {v['median_over_execute']:.3f})" if "median_over_live" in v else "")
                                                            for g, v in regions.items()), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
