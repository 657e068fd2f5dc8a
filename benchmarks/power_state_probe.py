"""One step's time on a rested GPU and on one held busy: how far a calibration made with gaps
between its steps is from the steady state of a loop that runs steps back to back.

    PYTHONPATH=. python benchmarks/power_state_probe.py --out docs/power-state-probe-h200.json

For each composition (a decode batch, prefills, and the mixed steps the schedulers build near
capacity): rest the GPU for `--rest-s` seconds, time `--repeats` steps back to back ("rested");
then run the same step back to back for `--busy-s` seconds, every step's time kept (how fast the
device settles), and time `--repeats` more ("busy"). nvidia-smi's SM clock, power and temperature
over each window come beside the times. The calibration (`fluidsched calibrate`) times each grid
point in a burst of warm-up + 5 steps, between rests as short as its host work; the live overlapped
loop near capacity has no rest at all.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

# (label, composition): (new tokens, context tokens) per sequence, as StepTimer takes them
COMPOSITIONS = [
    ("decode 128x512", [(1, 512)] * 128),
    ("prefill 1x2048", [(2048, 0)]),
    ("chunk 512 on 1536", [(512, 1536)]),
    ("mixed 128x512 + 256 chunk", [(1, 512)] * 128 + [(256, 0)]),
    ("mixed 16x512 + 256 chunk", [(1, 512)] * 16 + [(256, 0)]),
    ("mixed 64x1024 + 512 chunk on 512", [(1, 1024)] * 64 + [(512, 512)]),
    ("cohort 16x128", [(128, 0)] * 16),
]


def _window(log, t0: float, t1: float) -> dict:
    w = log.window(t0, t1)
    return {k: w[k] for k in ("samples", "clocks.sm", "clocks.sm_min", "power.draw", "temperature.gpu", "held_down_share") if k in w}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/power-state-probe.json")
    ap.add_argument("--rest-s", type=float, default=3.0)
    ap.add_argument("--busy-s", type=float, default=4.0)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    for name in ("rest_s", "busy_s"):
        if getattr(args, name) < 0:
            ap.error(f"--{name.replace('_', '-')} must be >= 0, got {getattr(args, name)}")
    if args.repeats < 1:
        ap.error(f"--repeats must be >= 1, got {args.repeats}")
    from gpu_steps import build_engine

    from runtime.gpu.clock_log import GpuClockLog
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.step_timer import StepTimer

    engine, info = build_engine("llama-2-7b")
    timer = StepTimer(engine)
    res = {"device": info.device_name, "versions": versions(), "host": describe_host(),
           "command": "PYTHONPATH=. python benchmarks/power_state_probe.py " + " ".join(sys.argv[1:]),
           "rest_s": args.rest_s, "busy_s": args.busy_s, "repeats": args.repeats, "points": []}
    with tempfile.TemporaryDirectory() as tmp, GpuClockLog(Path(tmp) / "clocks.csv", period_ms=100) as log:
        for label, comp in COMPOSITIONS:
            with timer.holding([comp]) as (batch,):
                timer._timed([batch], 0, 3)  # compile / capture outside the windows
                time.sleep(args.rest_s)
                t0 = time.time()
                rested = [r["step_s"] for r in timer._timed([batch], args.repeats, 0)[0]]
                t1 = time.time()
                busy_trace, t_end = [], time.perf_counter() + args.busy_s
                while time.perf_counter() < t_end:
                    busy_trace.extend(r["step_s"] for r in timer._timed([batch], 1, 0)[0])
                busy = [r["step_s"] for r in timer._timed([batch], args.repeats, 0)[0]]
                t3 = time.time()
            point = {"label": label, "composition": [list(x) for x in comp[:1]] + ([f"... {len(comp)} sequences"] if len(comp) > 1 else []),
                     "rested_step_s": rested, "busy_step_s": busy, "busy_trace_step_s": busy_trace,
                     "rested_median_s": statistics.median(rested), "busy_median_s": statistics.median(busy),
                     "rested_clocks": _window(log, t0, t1), "busy_clocks": _window(log, t1, t3)}
            point["busy_over_rested"] = point["busy_median_s"] / point["rested_median_s"]
            res["points"].append(point)
            print(f"{label:34s} rested {1e3 * point['rested_median_s']:7.2f} ms @ {point['rested_clocks'].get('clocks.sm')} MHz"
                  f"  busy {1e3 * point['busy_median_s']:7.2f} ms @ {point['busy_clocks'].get('clocks.sm')} MHz"
                  f"  ratio {point['busy_over_rested']:.3f}  ({len(busy_trace)} busy steps" +
                  (f": first {1e3 * statistics.median(busy_trace[:5]):.2f}, last {1e3 * statistics.median(busy_trace[-5:]):.2f} ms)"
                   if busy_trace else ")"), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
