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
of the step vLLM scheduled. Then each policy runs side by side with the project's capped scheduler
on the same arrivals, step by step. Writes docs/vllm-plugin-bench.md and docs/vllm-plugin-bench.json.
"""

from __future__ import annotations

import argparse
import json
import os
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
from integrations.vllm.harness import (  # noqa: E402
    BLOCK_SIZE, EngineShape, build_vllm_scheduler, run_alone, run_side_by_side, write_model_dir,
)
from runtime.arrivals import make_requests  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.schedulers import make_scheduler  # noqa: E402

SCENARIOS = (("mix-tight", 1500), ("long-tight", 300))  # (workload, requests)
ENGINE_LIMITS = {"max_num_batched_tokens": 8192, "max_num_seqs": 1024}
POLICIES = ("wait", "nested-wait")
# side by side with the project's capped schedulers: (policy, plugin settings, project scheduler)
SIDE_BY_SIDE = (("wait", {}, "wait-capped"), ("nested-wait", {"segment_caps": False}, "nested-wait-capped"),
                ("nested-wait", {}, "nested-wait-capped"))


def run(scenarios, seed: int) -> tuple[list[dict], list[dict]]:
    rows, side = [], []
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
            for policy, settings, project in SIDE_BY_SIDE:
                path = ROOT / "benchmarks" / "vllm_plugin" / f"{name}-{policy}.json"
                plan = plan_from_settings({"policy": str(path), "log_interval_s": 0, **settings})
                ours = make_scheduler(project, KVBlockManager(workload.kv_capacity_tokens, BLOCK_SIZE), policy=str(path))
                theirs = build_vllm_scheduler(engine, model_dir, plan=plan)
                res = run_side_by_side(requests(), ours, theirs, class_of=lambda r: r.type_name, batch_time=workload.batch_time)
                row = {"scenario": name, "policy": policy, "settings": settings, "project_scheduler": project,
                       **asdict(res)}
                side.append(row)
                print(f"{name:<11} {policy:<11} {json.dumps(settings):<24} vs {project:<18} steps {res.steps_matched}/"
                      f"{res.steps} identical; pauses {res.pauses_ours}/{res.pauses_vllm}; preemptions "
                      f"{res.preemptions_ours}/{res.preemptions_vllm}; boundary pauses {res.counters['pauses_boundary']}",
                      flush=True)
    return rows, side


def markdown(rows: list[dict], side: list[dict], meta: dict) -> str:
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
    lines += [
        "",
        "Throughput counts every sampled token (the prefill's and one per decode) over the makespan.",
        "",
        "## Step by step against the project's capped schedulers",
        "",
        "The same arrivals on one clock (the workload's batch time of the project's batch): the plugin inside "
        "vLLM's scheduler and the project's scheduler, steps whose scheduled requests, token counts and "
        "preemptions are identical. With segment caps on, Nested WAIT pauses at segment boundaries where "
        "`nested-wait-capped` (resident cap alone) does not, and segment 1's cap gates admission: a named "
        "difference. A second one: vLLM lets a request alone in the engine prefill past its chunk "
        "(`long_prefill_token_threshold`), where the project's scheduler chunks it; the plugin counts those steps "
        "(`lone_prefills_unchunked`).",
        "",
        "| scenario | policy | plugin settings | project scheduler | identical steps | pauses project / plugin | "
        "preemptions project / plugin | boundary pauses | lone prefills unchunked | peak blocks / pool |",
        "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in side:
        lines.append(
            f"| {r['scenario']} | {r['policy']} | `{json.dumps(r['settings'])}` | {r['project_scheduler']} | "
            f"{r['steps_matched']:,} / {r['steps']:,} | {r['pauses_ours']:,} / {r['pauses_vllm']:,} | "
            f"{r['preemptions_ours']} / {r['preemptions_vllm']} | {r['counters']['pauses_boundary']:,} | "
            f"{r['counters']['lone_prefills_unchunked']:,} | "
            f"{r['peak_blocks_vllm']:,} / {r['pool_blocks']:,} |")
    return "\n".join(lines) + "\n"


def _machine() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, {platform.system()}"


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
    rows, side = run(chosen, args.seed)
    meta = {"command": "HF_HUB_OFFLINE=1 python benchmarks/bench_vllm_plugin.py", "machine": _machine(),
            "python": platform.python_version(),
            "vllm": vllm.__version__, "seed": args.seed, "engine_limits": ENGINE_LIMITS}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows, "side_by_side": side}, indent=2) + "\n")
    Path(args.out + ".md").write_text(markdown(rows, side, meta))
    print(f"wrote {args.out}.md and {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
