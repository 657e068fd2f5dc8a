"""Per-repeat step times of the flatness benchmark's 512-token compositions, in two orders.

    PYTHONPATH=. python benchmarks/flatness_probe.py --out docs/flatness-probe-h200.json

`gpu_steps.py` reports the median of 10 repeats; this prints every repeat of 32 × 16 (the
composition whose step is slower than 1-16 sequences on most machines) timed right after
16 × 32 and again right after 8 × 64, and 8 × 64 itself, each with its host preparation, to
tell a warm-up or ordering effect from a steady cost.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="docs/flatness-probe.json")
    args = ap.parse_args()
    from gpu_steps import build_engine

    from runtime.gpu.host_info import versions
    from runtime.gpu.step_timer import StepTimer

    engine, info = build_engine("llama-2-7b")
    timer = StepTimer(engine)
    order = [("16x32", [(32, 0)] * 16), ("32x16 after 16x32", [(16, 0)] * 32), ("8x64", [(64, 0)] * 8),
             ("32x16 after 8x64", [(16, 0)] * 32), ("32x16 again", [(16, 0)] * 32), ("1x512", [(512, 0)])]
    res = {"device": info.device_name, "versions": versions(),
           "command": "PYTHONPATH=. python benchmarks/flatness_probe.py " + " ".join(sys.argv[1:]), "runs": []}
    for label, comp in order:
        (reps,) = timer.repeat_times([comp], repeats=12)
        res["runs"].append({"label": label, "repeats": reps})
        print(f"{label:20s} " + " ".join(f"{1e3 * r['step_s']:.2f}" for r in reps) + "  ms (host " +
              " ".join(f"{1e3 * r['host_s']:.2f}" for r in reps[:3]) + " ...)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
