"""Why vLLM-v1's and Sarathi-Serve's live mean latency ran above the simulator's near capacity,
from committed fidelity runs (no GPU): the decode attention's key tiles and the GPU's power state.

    PYTHONPATH=. python benchmarks/latency_gap.py --runs 20 21 22 23 24 25 --out docs/latency-gap-h200.json

For each H200 fidelity run N it reads `docs/fidelity-h200-runN.json` and
`docs/calibration-h200-runN-fidelity.json` and reports:

- `tile_edges`: the calibration's grid points on both sides of the decode attention's 64-key tile
  edges (`fluid.batch_time.decode_key_tiles`; the grid has them from run 23 on), each the median
  of its passes, with the tiles a decode walks there, and the fitted `decode_tile_s`;
- `points`: per live point, the GPU's SM clock and power (medians of the run's nvidia-smi samples
  during the point), the median live mixed step over the engine-step model, and the mean latency
  live over simulated;
- `calibration_clock`: the SM clock and power over the calibration's mixed points (median of
  the passes' medians) and the calibration's `sustain` protocol (seconds each point ran untimed
  back to back before it was timed; absent: 0).

`--calibrations FILE...` compares calibration files (say, one machine calibrated with and without
`--sustain-s`, `docs/sustain-ab-h200/`): per region, the median ratio of each file's grid points to
the first file's.

`--against RUN` adds, per region, the median ratio of each grid point's time to that run's (the
points both calibrations timed): a machine that is faster or slower moves every region alike, a
power state moves the compute-heavy regions and not the memory-bound decode-only points.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EDGE_LABEL = re.compile(r"^(decode (\d+)x(\d+)|mixed (\d+)x(\d+) \+ (\d+)x48 after 0)$")


def _median_times(cal: dict) -> dict[str, float]:
    """{label: the grid point's median time over the rows it has} (the live steps left out)."""
    by_label: dict[str, list[float]] = {}
    for r in cal["table"]:
        if not r["label"].startswith("live-"):
            by_label.setdefault(r["label"], []).append(r["time_s"])
    return {label: statistics.median(ts) for label, ts in by_label.items()}


def tile_edges(cal: dict) -> list[dict]:
    """The grid points at contexts 63, 64, 70, 127, 128, 129 (decode-only and beside 48-token prompts)."""
    from fluid.batch_time import decode_key_tiles

    out = []
    for label, t in sorted(_median_times(cal).items()):
        m = EDGE_LABEL.match(label)
        if not m:
            continue
        mixed = m.group(4) is not None
        context = int(m.group(5) if mixed else m.group(3))
        if context not in (63, 64, 70, 127, 128, 129):
            continue
        out.append({"label": label, "decodes": int(m.group(4) if mixed else m.group(2)), "context": context,
                    "prompts": int(m.group(6)) if mixed else 0, "tiles_per_decode": decode_key_tiles(context, beside_prefill=mixed),
                    "time_ms": round(1e3 * t, 3)})
    return out


def _clock(section: dict) -> dict:
    g = section.get("gpu_clocks") or {}
    return {"sm_mhz": g.get("clocks.sm"), "power_w": g.get("power.draw")}


def run_summary(n: int) -> dict:
    fid = json.loads((ROOT / f"docs/fidelity-h200-run{n}.json").read_text())
    cal = json.loads((ROOT / f"docs/calibration-h200-run{n}-fidelity.json").read_text())
    mixed = [v for k, v in fid.get("calibration_machine_speed_by_pass_region", {}).items() if k.endswith(" mixed")]
    clocks = [_clock(v) for v in mixed if (v.get("gpu_clocks") or {}).get("samples")]
    points = []
    for p in fid["points"]:
        ratio = (p.get("live_turn_vs_stepwise_by_region") or {}).get("mixed", {}).get("median_measured_over_predicted")
        points.append({"scheduler": p["scheduler"], "load": p["load"], **_clock(p),
                       "mixed_live_over_model": None if ratio is None else round(ratio, 4),
                       "latency_live_over_simulated": round(p["measured_mean_latency_s"] / p["simulated_mean_latency_s"], 4),
                       "tok_s_live_over_simulated": round(p["measured_tok_s"] / p["simulated_tok_s"], 4)})
    coefficients = cal["batch_time_stepwise"]["coefficients"]
    return {
        "run": n,
        "sustain_s_per_point": (cal.get("sustain") or {}).get("seconds_per_point", 0.0),
        "heldout_step_mape": cal["heldout_step_mape"],
        "decode_tile_s": coefficients.get("decode_tile_s"),
        "calibration_clock": {"sm_mhz": statistics.median(c["sm_mhz"] for c in clocks) if clocks else None,
                              "power_w": statistics.median(c["power_w"] for c in clocks) if clocks else None},
        "tile_edges": tile_edges(cal),
        "points": points,
    }


def region_ratios(cal: dict, base: dict) -> dict[str, float]:
    """Per region, the median of `cal`'s grid points over `base`'s (`capacity_spread.engine_steps_against`)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from capacity_spread import engine_steps_against

    return {region: round(r, 4) for region, r in sorted(engine_steps_against(base, cal).items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, nargs="+", default=[], help="H200 fidelity run numbers (docs/fidelity-h200-runN.json)")
    ap.add_argument("--calibrations", type=Path, nargs="+", default=[], help="calibration files compared region by region with the first")
    ap.add_argument("--against", type=int, help="a run whose calibration the others' grid points are divided by, region by region")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args(argv)
    if not args.runs and len(args.calibrations) < 2:
        print("error: give --runs N..., or two or more --calibrations files", file=sys.stderr)
        return 2
    for path in args.calibrations:
        if not path.is_file():
            print(f"error: --calibrations {path}: no such file; give calibration JSON files (fluidsched calibrate --out)", file=sys.stderr)
            return 2
    for n in args.runs + ([args.against] if args.against is not None else []):
        for path in (ROOT / f"docs/fidelity-h200-run{n}.json", ROOT / f"docs/calibration-h200-run{n}-fidelity.json"):
            if not path.is_file():
                print(f"error: run {n}: {path.relative_to(ROOT)} is missing; give runs whose fidelity and calibration files are in docs/", file=sys.stderr)
                return 2
    runs = [run_summary(n) for n in args.runs]
    if args.against is not None:
        base = json.loads((ROOT / f"docs/calibration-h200-run{args.against}-fidelity.json").read_text())
        for r in runs:
            cal = json.loads((ROOT / f"docs/calibration-h200-run{r['run']}-fidelity.json").read_text())
            r[f"grid_over_run{args.against}_by_region"] = region_ratios(cal, base)
    for r in runs:
        cc = r["calibration_clock"]
        print(f"run {r['run']}: sustain {r['sustain_s_per_point']} s/point, held-out {100 * r['heldout_step_mape']:.1f} %, "
              f"decode_tile_s {r['decode_tile_s']}, calibration mixed points at {cc['sm_mhz']} MHz / {cc['power_w']} W"
              + (f"; grid / run {args.against}: {r[f'grid_over_run{args.against}_by_region']}" if args.against is not None else ""))
        for e in r["tile_edges"]:
            print(f"    {e['label']:28s} {e['tiles_per_decode']} tiles/decode  {e['time_ms']:7.3f} ms")
        for p in r["points"]:
            print(f"    {p['scheduler']:8s} {p['load']}: {p['sm_mhz']} MHz {p['power_w']} W, mixed live/model {p['mixed_live_over_model']}, "
                  f"latency live/sim {p['latency_live_over_simulated']}, tok/s live/sim {p['tok_s_live_over_simulated']}")
    compared = []
    if args.calibrations:
        cals = [json.loads(p.read_text()) for p in args.calibrations]
        for path, cal in zip(args.calibrations, cals):
            entry = {"file": str(path), "sustain_s_per_point": (cal.get("sustain") or {}).get("seconds_per_point", 0.0),
                     "heldout_step_mape": cal["heldout_step_mape"], "over_first_by_region": region_ratios(cal, cals[0])}
            compared.append(entry)
            print(f"{path}: sustain {entry['sustain_s_per_point']} s/point, held-out {100 * entry['heldout_step_mape']:.1f} %, "
                  f"grid / first: {entry['over_first_by_region']}")
    if args.out:
        doc = {"command": "PYTHONPATH=. python benchmarks/latency_gap.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "device": "NVIDIA H200", "runs": runs, **({"calibrations": compared} if compared else {})}
        args.out.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
