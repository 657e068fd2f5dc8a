"""Simulator speed: request-steps per second for every policy on the chat-like preset.

Workload: the `chat-d-ten-bins` preset (PAPERS.md §7 (d): decode 1–500 in 10 bins, prefill 60,
55 req/s), 10,000 Poisson requests (seed 0), KV blocks of 16 tokens. A request-step is one
request's share of one step (a prefill chunk or a decode token). WAIT runs the policy
`fluidsched demo` would solve (the batch-cap recipe with the continuous rule when the cohort rule
does not fit); Nested WAIT, when `thresholds` finds no policy, runs the paper's chat-like
thresholds (ratio 66:43:32:24:17:11:7:4:2:1 over the ten 50-token segments, cap 128 — arXiv
2504.11320). Target (issue 4): WAIT and Sarathi-Serve under 3 s on one core.

    python benchmarks/bench_sim.py [--requests 10000] [--repeats 3] [--out docs/benchmarks-sim.md]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TARGET_S = 3.0
PRESET = "chat-d-ten-bins"
NESTED_RATIO = (66, 43, 32, 24, 17, 11, 7, 4, 2, 1)


def nested_policy_from_paper(workload):
    from runtime.policy_file import RuntimePolicy, RuntimeSegment

    cuts = sorted(t.decode for t in workload.types)
    scale = 128 / sum(NESTED_RATIO)
    segments, first = [], 0
    for cut, ratio in zip(cuts, NESTED_RATIO):
        segments.append(RuntimeSegment(first, cut, max(1, round(ratio * scale))))
        first = cut + 1
    return RuntimePolicy("nested_wait", "continuous", 0.5, segments=tuple(segments))


def policies(workload) -> dict:
    from runtime.policy_file import policy_from_dict
    from validation.demo import solve_policies

    solved, _ = solve_policies(workload)
    out = {s.scheduler: (policy_from_dict(s.document), s.how) for s in solved}
    if "nested-wait" not in out:
        out["nested-wait"] = (nested_policy_from_paper(workload), "paper's chat-like thresholds (66:43:…:1, cap 128)")
    return out


def runs(workload, names: list[str]) -> list[tuple[str, str, dict, str]]:
    """(label, scheduler, knobs, policy note) per run: every scheduler, and WAIT under both service rules."""
    pols = policies(workload)
    out = []
    for name in names:
        if name not in pols:
            if name not in ("wait", "nested-wait"):
                out.append((name, name, {}, ""))
            continue
        policy, how = pols[name]
        out.append((name, name, {"policy": policy}, how))
        if name == "wait":
            other = "cohort" if policy.service_rule == "continuous" else "continuous"
            note = f"{how.split(',')[0]}, thresholds as `wait`, {other} rule"
            out.append((f"wait-{other}", name, {"policy": policy, "service_rule": other}, note))
    return out


def time_one(name, workload, num_requests, knobs) -> tuple[float, int, dict]:
    from runtime.arrivals import make_requests
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    requests = make_requests(workload, num_requests, 0)
    scheduler = make_scheduler(name, KVBlockManager(workload.kv_capacity_tokens, 16), **knobs)
    t0 = time.perf_counter()
    result = simulate(scheduler, requests, workload.batch_time)
    wall_s = time.perf_counter() - t0
    steps = sum(len(r.prefill_chunk_end_s) + r.decode_steps_done for r in requests)
    summary = summarize(result, scheduler=name, warmup_s=0.1 * requests[-1].arrival_s)
    return wall_s, steps, summary


def machine() -> dict:
    cpu = "unknown"
    try:
        lscpu = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        cpu = next((line.split(":", 1)[1].strip() for line in lscpu.splitlines() if line.startswith("Model name")), cpu)
    except OSError:
        pass
    import numpy

    return {"cpu": cpu, "python": sys.version.split()[0], "platform": platform.platform(), "numpy": numpy.__version__}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="docs/benchmarks-sim.md")
    parser.add_argument("--only", help="comma-separated scheduler names")
    args = parser.parse_args(argv)

    from fluid.workload_io import load_workload
    from runtime.schedulers import available_schedulers

    workload = load_workload(PRESET)
    names = args.only.split(",") if args.only else available_schedulers()
    rows = []
    for label, name, knobs, how in runs(workload, names):
        times, steps, summary = [], 0, {}
        for _ in range(args.repeats):
            wall_s, steps, summary = time_one(name, workload, args.requests, knobs)
            times.append(wall_s)
        median_s = statistics.median(times)
        rows.append(
            {
                "scheduler": label,
                "median_s": median_s,
                "runs_s": times,
                "request_steps": steps,
                "request_steps_per_s": steps / median_s,
                "sim_steps": summary["num_steps"],
                "throughput_tokens_per_s": summary["throughput_tokens_per_s"],
                "mean_latency_s": summary["mean_latency_s"],
                "policy": how,
            }
        )
        r = rows[-1]
        print(f"{label:16s} {median_s:7.2f} s  {r['request_steps']:>9d} request-steps  {r['request_steps_per_s'] / 1e6:6.2f} M/s", flush=True)
    write_report(Path(args.out), rows, args, machine())
    return 0


def write_report(path: Path, rows, args, info) -> None:
    lines = [
        "# Simulator speed",
        "",
        f"`python benchmarks/bench_sim.py --requests {args.requests} --repeats {args.repeats}`: the `{PRESET}` preset, "
        f"{args.requests} Poisson requests (seed 0), 16-token KV blocks, one core, median of {args.repeats} runs "
        "(wall time of `runtime.sim.simulate` alone). A request-step is one request's share of one step "
        "(a prefill chunk or a decode token).",
        "",
        f"Machine: {info['cpu']}; Python {info['python']}; numpy {info['numpy']}; {info['platform']}.",
        f"Target (issue 4): WAIT and Sarathi-Serve under {TARGET_S:g} s.",
        "",
        "| scheduler | median s | request-steps | M request-steps/s | steps | tok/s | mean latency s | target |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        target = ("met" if r["median_s"] < TARGET_S else "missed") if r["scheduler"].split("-")[0] in ("wait", "sarathi") else ""
        lines.append(
            f"| {r['scheduler']} | {r['median_s']:.2f} | {r['request_steps']:,} | {r['request_steps_per_s'] / 1e6:.2f} | "
            f"{r['sim_steps']:,} | {r['throughput_tokens_per_s']:.0f} | {r['mean_latency_s']:.2f} | {target} |"
        )
    notes = [f"- {r['scheduler']}: {r['policy']}" for r in rows if r["policy"]]
    if notes:
        lines += ["", "Policies:", *notes]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.with_suffix(".json").write_text(json.dumps({"machine": info, "rows": rows}, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
