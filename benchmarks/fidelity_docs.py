"""Collects `gpu_fidelity.py` output folders (one per machine) into the files `docs/` keeps.

    python benchmarks/fidelity_docs.py RUN_DIR [RUN_DIR ...] --tag h200 --command "..."

writes `docs/fidelity-TAG.json` (the last run's device, versions, host, stepwise model, held-out
MAPE and points; every run's points under `runs`), `docs/reproducibility-TAG.json` (per run: host,
device, versions, tok/s and mean TTFT per scheduler at load 0.9, step over device time, eager
share; and the spread between runs), and copies the last run's calibration, step benchmark and
live step log to `docs/calibration-TAG-fidelity.json`, `docs/bench-steps-TAG.json`,
`docs/fidelity-TAG-steps.json.gz`. A folder that lacks `steps.json` (its step benchmark was not
kept) takes the median step-over-device ratio from `--step-ratio-from-log LOG` when given.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
from pathlib import Path

SCHEDULERS = ("wait", "vllm-v1", "sarathi")


def _run(folder: Path, log: Path | None) -> dict:
    fid = json.loads((folder / "fidelity.json").read_text())
    steps_file = folder / "steps.json"
    if steps_file.is_file():
        ratio = json.loads(steps_file.read_text())["step_vs_device"]["median_step_over_device"]
    elif log is not None:
        ratios = [float(m) for m in re.findall(r"ratio ([0-9.]+)", log.read_text())]
        ratio = statistics.median(ratios) if ratios else None
    else:
        ratio = None
    near = [p for p in fid["points"] if p["load"] == 0.9]
    steps = sum(p["num_steps"] for p in near)
    return {
        "folder": str(folder), "host": fid["host"], "device": fid["device"], "versions": fid["versions"], "command": fid["command"],
        "calibration_made_here": not fid["smoke_test_reused_calibration"], "load": 0.9,
        "tok_s": {p["scheduler"]: p["measured_tok_s"] for p in near},
        "mean_ttft_s": {p["scheduler"]: p["measured_mean_ttft_s"] for p in near},
        "step_over_device_median": ratio,
        "eager_step_share": sum(p["eager_step_share"] * p["num_steps"] for p in near) / steps if steps else None,
        "heldout_step_mape": fid["heldout_step_mape"],
    }, fid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--tag", default="h200")
    ap.add_argument("--command", required=True)
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--step-ratio-from-log", type=Path, action="append", default=[], help="per run without steps.json, in order")
    args = ap.parse_args()
    logs = iter(args.step_ratio_from_log)
    runs, fids = [], []
    for folder in args.runs:
        run, fid = _run(folder, None if (folder / "steps.json").is_file() else next(logs, None))
        runs.append(run)
        fids.append(fid)
    last = fids[-1]
    fidelity = {k: last[k] for k in ("device", "versions", "host", "model", "command", "batch_time_model", "linear3_for_fluid",
                                      "heldout_step_mape", "heldout_mape_by_region", "slack", "requests", "points")}
    for key in ("deadline_s", "cut_by_deadline", "smoke"):  # written by gpu_fidelity.py since the deadline was added
        if key in last:
            fidelity[key] = last[key]
    fidelity["collected_by"] = args.command
    fidelity["runs"] = [{"host": f["host"], "heldout_step_mape": f["heldout_step_mape"], "points": f["points"]} for f in fids]
    (args.docs / f"fidelity-{args.tag}.json").write_text(json.dumps(fidelity, indent=1) + "\n")
    spread = {}
    if len(runs) > 1:
        for s in SCHEDULERS:
            values = [r["tok_s"][s] for r in runs]
            spread[s] = max(values) / min(values) - 1
    repro = {"command": args.command, "runs": runs, "tok_s_spread_between_runs": spread, "target": "tok/s within 3 % per scheduler"}
    (args.docs / f"reproducibility-{args.tag}.json").write_text(json.dumps(repro, indent=1) + "\n")
    src = args.runs[-1]
    for name, dst in (("calibration.json", f"calibration-{args.tag}-fidelity.json"), ("steps.json", f"bench-steps-{args.tag}.json"),
                      ("live-steps.json.gz", f"fidelity-{args.tag}-steps.json.gz")):
        if (src / name).is_file():
            shutil.copyfile(src / name, args.docs / dst)
    print(json.dumps(spread))


if __name__ == "__main__":
    main()
