"""`fluidsched simulate WORKLOAD (--policy POLICY.json | --scheduler NAME) ...`: one simulated run.

Prints a short summary (or, with `--json`, the summary object) and, with `--out DIR`, writes the
run folder (`runtime/results.py`). Scheduler knobs go in as `--option key=value` (repeatable).
"""

from __future__ import annotations

import argparse
import json
import sys

from fluid.errors import InputError
from runtime.schedulers import SCHEDULERS


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments shared by `simulate` and `compare`."""
    parser.add_argument("workload", help="workload YAML/JSON file or preset name")
    parser.add_argument("--policy", help="policy JSON from `fluidsched solve` (runs wait or nested-wait)")
    parser.add_argument("--accept-policy-mismatch", action="store_true",
                        help="run a policy solved for another workload (other hash, C or rates); the differences "
                             "are printed and recorded in config.json")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every arrival rate (default 1)")
    parser.add_argument("--requests", type=int, default=2000, help="number of requests (default 2000)")
    parser.add_argument("--seed", type=int, default=0, help="arrival seed (default 0)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (16 like vLLM; 1 = the paper's token model)")
    parser.add_argument("--replicas", type=int, default=1, help="number of replicas behind the router (default 1)")
    parser.add_argument("--router", default="round-robin", help="round-robin, random, least-work or split (default round-robin)")
    parser.add_argument("--split", help="JSON file {type name: [probability per replica]} for --router split")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="scheduler knob (repeatable)")
    parser.add_argument("--tiers", help="SLO tiers FRACTION:TBT_SLO_S,... (e.g. 0.05:0.1,0.95:0.5)")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up cut as a fraction of the arrival span (default 0.1)")
    parser.add_argument("--ttft-slo", type=float, default=0.5, help="TTFT bound for SLO attainment in s (default 0.5)")
    parser.add_argument("--horizon", type=float, help="stop the clock at this time in s")
    parser.add_argument("--out", help="write the run folder(s) here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--scheduler", help=f"scheduler name ({', '.join(SCHEDULERS)})")
    parser.add_argument("--trace-types", action="store_true", help="record each batch's requests per type (slower)")


def load_split(path: str | None):
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except OSError as err:
        raise InputError(f"cannot read the split file: {err.strerror or err}", source=path) from None
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON at line {err.lineno}: {err.msg}", source=path) from None


def base_config(args, scheduler: str, policy=None, policy_document=None, *, trace: bool = False):
    """The SimConfig the common arguments describe, for one scheduler."""
    from fluid.workload_io import load_workload
    from runtime.arrivals import parse_tiers
    from runtime.simrun import SimConfig, parse_option

    workload = load_workload(args.workload)
    options = dict(parse_option(o) for o in args.option)
    return SimConfig(
        workload=workload,
        scheduler=scheduler,
        num_requests=args.requests,
        seed=args.seed,
        rate_scale=args.rate_scale,
        block_size=args.block_size,
        options=options,
        policy=policy,
        policy_document=policy_document,
        replicas=args.replicas,
        router=args.router,
        split=load_split(args.split),
        warmup_fraction=args.warmup,
        ttft_slo_s=args.ttft_slo,
        tiers=parse_tiers(args.tiers) if args.tiers else None,
        horizon_s=args.horizon,
        trace=trace,
        accept_policy_mismatch=args.accept_policy_mismatch,
    )


def load_policy_arg(path: str | None):
    """(RuntimePolicy, the JSON document) of `--policy`, or (None, None)."""
    if path is None:
        return None, None
    from runtime.policy_file import load_policy

    policy = load_policy(path)
    with open(path, encoding="utf-8") as handle:
        return policy, json.load(handle)


def warn_policy_mismatch(config) -> None:
    """With --accept-policy-mismatch, say on stderr what differs (config.json records it too)."""
    from runtime.simrun import policy_differences

    if config.policy is not None and config.accept_policy_mismatch:
        for line in policy_differences(config.policy, config.workload, config.rate_scale):
            print(f"warning: policy mismatch accepted: {line}", file=sys.stderr)


def format_table(summaries: list[dict], fluid_throughput: float | None = None) -> str:
    """One row per scheduler: throughput, latency, TTFT, TBT, restarts, peak KV."""
    cols = [
        ("scheduler", "{}", "scheduler"),
        ("tok/s", "{:.1f}", "throughput_tokens_per_s"),
        ("lat mean s", "{:.3f}", "mean_latency_s"),
        ("lat p99 s", "{:.3f}", "p99_latency_s"),
        ("TTFT mean s", "{:.3f}", "mean_ttft_s"),
        ("TBT p99 s", "{:.4f}", "p99_tbt_s"),
        ("restarts", "{}", "restarts"),
        ("peak KV", "{}", "peak_kv_tokens"),
        ("done", "{}", "completed"),
    ]
    rows = [[h for h, _, _ in cols]]
    if fluid_throughput is not None:
        rows.append(["fluid*", f"{fluid_throughput:.1f}"] + ["-"] * (len(cols) - 2))
    for s in summaries:
        rows.append([("-" if s.get(k) is None else fmt.format(s[k])) for _, fmt, k in cols])
    widths = [max(len(r[i]) for r in rows) for i in range(len(cols))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def run(args) -> int:
    from runtime.results import write_run_folder
    from runtime.simrun import POLICY_SCHEDULERS, run_simulation

    policy, document = load_policy_arg(args.policy)
    scheduler = args.scheduler
    if scheduler is None:
        if policy is None:
            raise InputError(f"give --policy POLICY.json or --scheduler NAME ({', '.join(SCHEDULERS)})", field="scheduler")
        scheduler = POLICY_SCHEDULERS[policy.policy]
    config = base_config(args, scheduler, policy, document, trace=args.trace_types)
    warn_policy_mismatch(config)
    output = run_simulation(config)
    if args.out:
        write_run_folder(args.out, output)
    if args.json:
        json.dump(output.summary, sys.stdout, indent=2, default=float)
        print()
    else:
        print(format_table([output.summary]))
        if args.out:
            print(f"run folder: {args.out}")
    return 0
