"""Capped-rule WAIT / Nested WAIT policies from `fluidsched solve` on every preset, beside vLLM-v1 and
Sarathi-Serve on the same arrivals (simulated clock; docs/capped-rule.md).

For each preset, at its own rate and at 0.95 of its capacity scale θ*: `solve --service-rule
capped` (automatic slack; WAIT for known lengths, Nested WAIT for the presets of unknown output
lengths), then one simulation per scheduler on the same seeded arrivals. The table gives the
thresholds (caps), the memory bound the policy chose against the measured peak KV, overflow
events (decodes paused for want of a block) and evictions, throughput / throughput*, and mean and
p99 latency and TTFT.

    nice -n 15 python benchmarks/bench_thresholds.py [--requests N] [--max-requests N] [--seeds 0,1]
        [--presets a,b] [--no-pace] [--out PATH]

writes docs/benchmarks-thresholds.md and docs/benchmarks-thresholds.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

NESTED_PRESETS = ("nested-c-four-classes", "chat-d-ten-bins", "chat-d-ten-bins-550", "azure-conv", "sharegpt-slai")
BASELINES = ("vllm-v1", "sarathi")
# every row's arrivals span this many fluid lifetimes of its longest request, so the 10 % warm-up cut
# is 2 of them: an empty server takes about one such lifetime to fill (docs/capped-rule.md, "Measured")
STEADY_LIFETIMES = 20


def _solve(preset: str, rate_scale: float, out: Path) -> tuple[dict, str]:
    from validation.cli import main

    argv = ["solve", preset, "--rate-scale", repr(rate_scale), "--service-rule", "capped", "-o", str(out)]
    if preset in NESTED_PRESETS:
        argv[2:2] = ["--policy", "nested-wait"]
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        code = main(argv)
    if code != 0:
        return {}, err.getvalue().strip().splitlines()[-1]
    return json.loads(out.read_text()), err.getvalue().strip()


def _run(workload, name: str, policy, requests: int, seed: int, pace: bool = True, block_size: int = 16,
         work_conserving: bool = False) -> dict:
    from runtime.arrivals import make_requests
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import step_metrics, summarize, warmup_cut_s
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    reqs = make_requests(workload, requests, seed)
    knobs = {"policy": policy} if policy is not None else {}
    if policy is not None and not pace:
        knobs["pace"] = False
    if policy is not None and work_conserving:
        knobs["work_conserving"] = True
    scheduler = make_scheduler(name, KVBlockManager(workload.kv_capacity_tokens, block_size), **knobs)
    t0 = time.perf_counter()
    result = simulate(scheduler, reqs, workload.batch_time)
    wall = time.perf_counter() - t0
    cut = warmup_cut_s(reqs, 0.1)
    s = summarize(result, scheduler=name, warmup_s=cut)
    stats = getattr(scheduler, "stats", {})
    # decode tokens per second in each tenth of the arrival span (the ramp from an empty server)
    last = max(r.arrival_s for r in reqs)
    times = np.concatenate([np.asarray(r.token_times_s[1:]) for r in reqs if len(r.token_times_s) > 1])
    by_tenth = np.histogram(times, np.linspace(0.0, last, 11))[0] / (last / 10)
    steps = step_metrics(result.steps, result.kv_capacity_tokens)
    return {"scheduler": name, "throughput_tokens_per_s": s.decode_throughput_tokens_per_s,
            "mean_latency_s": s.mean_latency_s, "p99_latency_s": s.p99_latency_s, "mean_ttft_s": s.mean_ttft_s,
            "p99_ttft_s": s.p99_ttft_s, "peak_kv_tokens": s.peak_kv_tokens, "restarts": s.restarts,
            "decodes_paused": stats.get("decodes_paused"), "evictions": stats.get("evictions"),
            "admissions_deferred": stats.get("admissions_deferred"), "admissions_paced": stats.get("admissions_paced"),
            "throughput_by_tenth_tokens_per_s": by_tenth.tolist(),
            "mean_kv_tokens": steps["mean_kv_tokens"], "mean_decodes_per_step": steps["mean_decodes_per_step"], "completed": s.completed, "wall_s": wall}


def _caps(doc: dict) -> str:
    from thresholds.capped import nested_resident_cap, wait_class_caps

    if doc["policy"] == "wait":
        caps = wait_class_caps([(c["decode"], c["threshold"]) for c in doc["classes"]])
        return "/".join(map(str, caps))
    return f"tl={nested_resident_cap([(s['first_stage'], s['last_stage'], s['threshold']) for s in doc['segments']])}"


def main(argv=None) -> int:
    from fluid.equilibrium import closed_form
    from fluid.presets import preset_names
    from fluid.workload_io import load_workload
    from runtime.policy_file import load_policy
    from runtime.simrun import policy_scheduler

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=20000,
                    help="requests per run at least; raised so that arrivals span 20 × the longest request's "
                         "fluid latency (steady state: the 10 %% warm-up cut is then 2 such lifetimes), up to "
                         "--max-requests")
    ap.add_argument("--max-requests", type=int, default=None,
                    help="cap on requests per run (default: none; a row the cap cuts below the steady-state "
                         "rule is marked in the table)")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--presets", default=None, help="comma-separated (default: every preset)")
    ap.add_argument("--block-size", type=int, default=16,
                    help="KV block size in tokens (default 16, vLLM's; smaller blocks waste less of each last block)")
    ap.add_argument("--work-conserving", action="store_true",
                    help="run the capped rule with work-conserving caps (past a cap when every resident's end fits C)")
    ap.add_argument("--no-pace", action="store_true",
                    help="run the capped rule without its admission pace (the rule before it, for comparison)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "benchmarks-thresholds"))
    args = ap.parse_args(argv)
    if args.block_size < 1:
        ap.error(f"--block-size must be a whole number of tokens ≥ 1, got {args.block_size}")
    presets = args.presets.split(",") if args.presets else list(preset_names())
    seeds = [int(s) for s in args.seeds.split(",")]
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for preset in presets:
        base = load_workload(preset)
        theta = closed_form(base).capacity_scale
        for label, scale in (("own rate", 1.0), ("0.95 θ*", 0.95 * theta)):
            w = load_workload(preset, rate_scale=scale)
            point = closed_form(w)
            path = tmp / f"{preset}-{label.replace(' ', '')}.json"
            doc, note = _solve(preset, scale, path)
            row = {"preset": preset, "load": label, "rate_scale": scale, "load_factor": point.load_factor,
                   "memory_star_tokens": point.memory_star_tokens, "C": w.kv_capacity_tokens,
                   "throughput_star": point.throughput_star_tokens_per_s, "solve_note": note, "runs": []}
            if not doc:
                rows.append(row)
                print(f"{preset} {label}: solve refused: {note}", flush=True)
                continue
            policy = load_policy(path)
            # steady state: the arrivals must span many lifetimes of the longest request
            longest_s = (max(t.decode for t in w.types) + 1) * point.iteration_time_star_s
            wanted = max(args.requests, math.ceil(STEADY_LIFETIMES * longest_s * w.total_rate_per_s))
            requests = wanted if args.max_requests is None else min(args.max_requests, wanted)
            if w.arrivals.kind == "trace":  # a replayed trace has as many requests as rows
                from runtime.arrivals import load_trace

                requests = min(requests, len(load_trace(w.arrivals.trace)[0]))
            row["requests"] = requests
            # the rule holds when the arrivals span STEADY_LIFETIMES longest lifetimes (a trace: its own span)
            row["steady_state_rule_met"] = requests >= wanted or w.arrivals.kind == "trace"
            row.update(caps=_caps(doc), slack=doc["options"]["slack"], memory=doc["capped"]["memory"],
                       chunk=doc["capped"]["prefill_chunk_tokens"])
            for seed in seeds:
                for name in (policy_scheduler(policy),) + BASELINES:
                    run = _run(w, name, policy if name == policy_scheduler(policy) else None, requests, seed,
                               pace=not args.no_pace, block_size=args.block_size,
                               work_conserving=args.work_conserving)
                    run["seed"] = seed
                    row["runs"].append(run)
                    print(f"{preset} {label} seed {seed} {name}: {run['throughput_tokens_per_s'] / row['throughput_star']:.3f} "
                          f"of throughput*, peak KV {run['peak_kv_tokens']}, {run['wall_s']:.1f} s", flush=True)
            rows.append(row)
    out = Path(args.out)
    cap = "no cap" if args.max_requests is None else f"at most {args.max_requests}"
    meta = {"requests": f"at least {args.requests}, {cap} (per row: {STEADY_LIFETIMES} × the longest request's fluid latency × Λ; a trace: at most its rows)", "seeds": seeds, "block_size": args.block_size, "work_conserving": args.work_conserving, "warmup_fraction": 0.1,
            "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor() or None,
            "command": "python benchmarks/bench_thresholds.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    out.with_suffix(".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1, default=float) + "\n")
    out.with_suffix(".md").write_text(_markdown(meta, rows))
    print(f"wrote {out.with_suffix('.md')}")
    return 0


def _f(x, fmt="{:.3f}"):
    return "-" if x is None else fmt.format(x)


def _markdown(meta: dict, rows: list[dict]) -> str:
    lines = [
        "# Capped-rule policies from `fluidsched solve` beside vLLM-v1 and Sarathi-Serve (simulated)",
        "",
        f"Generated by `{meta['command']}` (Python {meta['python']}, {meta['machine']}); "
        f"{meta['requests']} requests per run, seeds {meta['seeds']}, block size {meta['block_size']}, warm-up cut 10 % of the "
        "arrival span; every scheduler of a row sees the same arrivals. Policies: `solve --service-rule capped` "
        "with the automatic slack (docs/capped-rule.md), WAIT for known output lengths, Nested WAIT for "
        "the presets of unknown ones; "
        f"{'work-conserving caps' if meta['work_conserving'] else 'caps that always bind (the default)'}. `memory` is the chosen bound (expected × (1 + margin)) and the worst case; "
        "`paused` counts decode steps skipped for want of a free block (the overflow events); `deferred / paced` "
        "counts the admission passes the look-ahead and the pace ended (docs/capped-rule.md, \"Admission\"). Baselines "
        "keep their defaults. thr/thr* is decode throughput over the fluid throughput*.",
        "",
        "| preset | load | L | requests | caps | slack | chunk | memory: required / worst | scheduler | thr/thr* | peak KV / C | paused | evict | deferred / paced | lat mean s | lat p99 s | TTFT mean s | TTFT p99 s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        if not row["runs"]:
            lines.append(f"| {row['preset']} | {row['load']} | {row['load_factor']:.3f} | solve refused: "
                         f"{row['solve_note'][:120]} | | | | | | | | | | | | | | |")
            continue
        m = row["memory"]
        for run in row["runs"]:
            first = run is row["runs"][0]
            lines.append(" | ".join([
                "", row["preset"] if first else "", row["load"] if first else "",
                f"{row['load_factor']:.3f}" if first else "",
                (str(row["requests"]) + ("" if row["steady_state_rule_met"] else " (cut short)")) if first else "",
                row["caps"] if first else "",
                f"{row['slack']:g}" if first else "", str(row["chunk"]) if first else "",
                f"{m['required_tokens']:,.0f} / {m['worst_case_tokens']:,.0f}" if first else "",
                run["scheduler"] + (f" (seed {run['seed']})" if len(meta["seeds"]) > 1 else ""),
                _f(run["throughput_tokens_per_s"] / row["throughput_star"]),
                f"{run['peak_kv_tokens']:,} / {row['C']:,}", _f(run["decodes_paused"], "{}"), _f(run["evictions"], "{}"),
                "-" if run.get("admissions_deferred") is None else f"{run['admissions_deferred']} / {run.get('admissions_paced', '-')}",
                _f(run["mean_latency_s"]), _f(run["p99_latency_s"]), _f(run["mean_ttft_s"]), _f(run["p99_ttft_s"]), "",
            ]).strip())
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
