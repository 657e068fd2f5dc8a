"""Collects one `benchmarks/gpu_loop.sh OUT` folder into the two files `docs/` keeps.

    python benchmarks/gpu_loop_summary.py OUT --tag h200 --command "REQUESTS=3000 ... (one device call, NVIDIA H200)"

writes `docs/loop-TAG.json` (the command, device and versions, the workload design, and every
live and simulated run summary, keyed by scheduler) and `docs/loop-TAG-steps.json.gz` (every step
of the live runs: composition and measured time), and copies the calibration, workload and
policy files the loop produced to `docs/calibration-TAG.json`, `docs/default-TAG.yaml` and
`docs/policy-wait-TAG.json`.
"""

from __future__ import annotations

import argparse
import gzip
import json
import shutil
from pathlib import Path

SCHEDULERS = ("wait", "sarathi", "vllm-v1")
DESIGN_KEYS = ("wait_thresholds", "wait_memory_tokens", "load_factor", "iteration_time_star_s", "memory_star_tokens",
               "prompts_per_stage", "rate_per_type_per_s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("loop_dir", type=Path)
    ap.add_argument("--tag", default="h200")
    ap.add_argument("--command", required=True, help="the command that produced the folder, recorded as given")
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--no-inputs", action="store_true", help="do not copy the calibration, workload and policy files")
    args = ap.parse_args()
    out, tag = args.loop_dir, args.tag
    missing = [p for p in [out / "workload-design.json"] + [out / f"{kind}-{s}.json" for s in SCHEDULERS for kind in ("run", "sim")] if not p.is_file()]
    if missing:
        raise SystemExit(f"not a complete gpu_loop.sh folder: missing {', '.join(str(p) for p in missing)}")
    runs = {s: json.loads((out / f"run-{s}.json").read_text()) for s in SCHEDULERS}
    design = json.loads((out / "workload-design.json").read_text())
    first = runs["wait"]
    versions = first.get("versions", {})
    summary = {
        "command": args.command,
        "env": " ".join(str(x) for x in (first.get("device"), versions.get("torch"), versions.get("cuda"), versions.get("triton"),
                                          versions.get("transformers"), versions.get("python"))),
        "design": {k: design["design"][k] for k in DESIGN_KEYS if k in design.get("design", {})},
        "runs": runs,
        "simulated": {s: json.loads((out / f"sim-{s}.json").read_text()) for s in SCHEDULERS},
    }
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / f"loop-{tag}.json").write_text(json.dumps(summary, indent=1) + "\n")
    steps = {s: json.loads((out / f"run-{s}" / "steps.json").read_text()) for s in SCHEDULERS if (out / f"run-{s}" / "steps.json").is_file()}
    with gzip.open(args.docs / f"loop-{tag}-steps.json.gz", "wt") as f:
        json.dump(steps, f, separators=(",", ":"))
    for src, dst in () if args.no_inputs else ((f"calibration-{tag}.json", f"calibration-{tag}.json"), (f"default-{tag}.yaml", f"default-{tag}.yaml"),
                     (f"policy-wait-{tag}.json", f"policy-wait-{tag}.json")):
        shutil.copyfile(out / src, args.docs / dst)
    print(json.dumps({s: (runs[s]["throughput_tokens_per_s"], summary["simulated"][s]["throughput_tokens_per_s"]) for s in SCHEDULERS}))


if __name__ == "__main__":
    main()
