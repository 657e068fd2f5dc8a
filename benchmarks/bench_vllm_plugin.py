"""The fluidsched scheduler class against stock vLLM inside vLLM 0.32's real scheduler, no model.

Run in vLLM's own environment from the repository root (docs/vllm-plugin.md):

    HF_HUB_OFFLINE=1 nice -n 15 python benchmarks/bench_vllm_plugin.py

For each memory-binding scenario (benchmarks/vllm_plugin/*.yaml: presets with a smaller KV pool),
the same Poisson arrivals are served by vLLM's stock `Scheduler` and by `FluidschedScheduler` with
the WAIT and Nested WAIT capped policies solved for that workload
(`fluidsched solve benchmarks/vllm_plugin/W.yaml --policy {wait,nested-wait} --service-rule
capped -o benchmarks/vllm_plugin/W-{wait,nested-wait}.json`). Both run with vLLM's `vllm serve`
defaults for an H100/H200-class GPU (max_num_batched_tokens 8192, max_num_seqs 1024), block size
16, the pool of the workload's C, prefix caching off; each step lasts the workload's batch time
of the step vLLM scheduled. Writes docs/vllm-plugin-bench.md and docs/vllm-plugin-bench.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fluid.workload_io import load_workload  # noqa: E402
from integrations.vllm.config import plan_from_settings  # noqa: E402
from integrations.vllm.harness import BLOCK_SIZE, EngineShape, build_vllm_scheduler, run_alone, write_model_dir  # noqa: E402
from runtime.arrivals import make_requests  # noqa: E402

SCENARIOS = (("mix-tight", 1500), ("long-tight", 300))  # (workload, requests)
ENGINE_LIMITS = {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
POLICIES = ("wait", "nested-wait")


def run(scenarios, seed: int) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model_dir(Path(tmp) / "model")
        for name, count in scenarios:
            workload = load_workload(ROOT / "benchmarks" / "vllm_plugin" / f"{name}.yaml")
            engine = EngineShape(workload.kv_capacity_tokens // BLOCK_SIZE, **ENGINE_LIMITS)
            requests = lambda: make_requests(workload, count, seed)  # noqa: E731 (fresh objects per run)
            runs = [("stock vLLM", None)] + [(p, ROOT / "benchmarks" / "vllm_plugin" / f"{name}-{p}.json") for p in POLICIES]
            for label, policy in runs:
                plan = plan_from_settings({"policy": str(policy), "log_interval_s": 0}) if policy else None
                scheduler = build_vllm_scheduler(engine, model_dir, plan=plan)
                t0 = time.perf_counter()
                res = run_alone(requests(), scheduler, class_of=lambda r: r.type_name, batch_time=workload.batch_time)
                row = {"scenario": name, "scheduler": label, "requests": count, "kv_capacity_tokens": workload.kv_capacity_tokens,
                       "resident_cap": plan.resident_cap if plan else None, "wall_s": time.perf_counter() - t0, **asdict(res)}
                rows.append(row)
                print(f"{name:<11} {label:<11} done {res.completed}/{count} preempt {res.preemptions:>6} "
                      f"TTFT mean {res.ttft_mean_s:8.3f} s p50 {res.ttft_median_s:8.3f} p99 {res.ttft_p99_s:8.3f} "
                      f"thr {res.throughput_tokens_per_s:8.1f} tok/s peak {res.peak_blocks}/{res.pool_blocks}", flush=True)
    return rows


def markdown(rows: list[dict], meta: dict) -> str:
    lines = [
        "# The vLLM scheduler class against stock vLLM (model-free, vLLM's real scheduler)",
        "",
        f"Command: `{meta['command']}` in vLLM's environment. Machine: {meta['machine']}; Python {meta['python']}; "
        f"vLLM {meta['vllm']}. Arrivals: Poisson, seed {meta['seed']}; engine limits {ENGINE_LIMITS}, block "
        f"{BLOCK_SIZE} tokens, prefix caching off. The clock is the workload's batch-time model applied to each step "
        "vLLM scheduled (no model runs), so TTFT and throughput are simulated seconds; preemptions and memory are "
        "vLLM's own accounting. Scenarios and policies: `benchmarks/vllm_plugin/` (docs/vllm-plugin.md).",
        "",
        "| scenario | C (tokens) | scheduler | resident cap | done | preemptions | TTFT mean (s) | TTFT p50 (s) | "
        "TTFT p99 (s) | mean latency (s) | throughput (tok/s) | peak blocks / pool | plugin counters |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in rows:
        c = r["counters"]
        counters = (f"released {c['requests_released']} in {c['cohorts_released']} cohorts, {c['partial_cohorts']} partial; "
                    f"paused {c['pauses_memory']} (memory), {c['pauses_boundary']} (boundary); "
                    f"last-resort preemptions {c['last_resort_preemptions']}") if c else ""
        lines.append(
            f"| {r['scenario']} | {r['kv_capacity_tokens']:,} | {r['scheduler']} | {r['resident_cap'] or ''} | "
            f"{r['completed']}/{r['requests']} | {r['preemptions']:,} | {r['ttft_mean_s']:.3f} | {r['ttft_median_s']:.3f} | "
            f"{r['ttft_p99_s']:.3f} | {r['latency_mean_s']:.2f} | {r['throughput_tokens_per_s']:.1f} | "
            f"{r['peak_blocks']:,} / {r['pool_blocks']:,} | {counters} |")
    lines.append("")
    lines.append("Throughput counts every sampled token (the prefill's and one per decode) over the makespan.")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scenario", action="append", help="only these scenarios (repeatable)")
    parser.add_argument("--out", default=str(ROOT / "docs" / "vllm-plugin-bench"), help="output path without extension")
    args = parser.parse_args(argv)
    try:
        import vllm
    except ImportError as err:
        print(f"vllm is not importable here ({err}): run in vLLM's environment (docs/vllm-plugin.md)", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not args.scenario or s[0] in args.scenario]
    rows = run(chosen, args.seed)
    meta = {"command": "HF_HUB_OFFLINE=1 python benchmarks/bench_vllm_plugin.py", "machine": f"{platform.machine()} "
            f"{platform.processor() or ''} ({platform.system()})".strip(), "python": platform.python_version(),
            "vllm": vllm.__version__, "seed": args.seed, "engine_limits": ENGINE_LIMITS}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(rows, meta))
    print(f"wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
