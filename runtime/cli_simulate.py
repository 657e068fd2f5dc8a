"""`fluidsched simulate WORKLOAD (--policy POLICY.json | --scheduler NAME) ...`: one simulated run.

Prints a short summary (or, with `--json`, the summary object) and, with `--out DIR`, writes the
run folder (`runtime/results.py`). Scheduler knobs go in as `--option key=value` (repeatable).
"""

from __future__ import annotations

import argparse
import json
import sys

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import InputError
from fluid.tables import format_table as render_table
from runtime.schedulers import SCHEDULERS
from runtime.summary import RunSummary


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
    parser.add_argument("--metric-percentiles", default="99", help="percentiles of the serving metrics, e.g. 50,90,99 (default 99, as vLLM)")
    parser.add_argument("--goodput", nargs="+", metavar="METRIC:MS", help="goodput bounds as vLLM's: ttft:MS tpot:MS e2el:MS")
    add_json_argument(parser, "print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it shows only on a terminal, for runs over 1 s)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--scheduler", help=f"scheduler name ({', '.join(SCHEDULERS)})")
    parser.add_argument("--trace-types", action="store_true", help="record each batch's requests per type (slower)")


def load_split(path: str | None):
    if path is None:
        return None
    from fluid.file_input import read_json

    return read_json(path, what="split file")


def base_config(args, scheduler: str, policy=None, policy_document=None, *, trace: bool = False):
    """The SimConfig the common arguments describe, for one scheduler."""
    from fluid.workload_io import load_workload
    from runtime.arrivals import parse_tiers
    from runtime.serving_metrics import parse_goodput, parse_percentiles
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
        tiers=parse_tiers(args.tiers) if args.tiers is not None else None,
        horizon_s=args.horizon,
        trace=trace,
        accept_policy_mismatch=args.accept_policy_mismatch,
        metric_percentiles=parse_percentiles(args.metric_percentiles),
        goodput_ms=parse_goodput(args.goodput) if args.goodput else None,
    )


def load_policy_arg(path: str | None):
    """(RuntimePolicy, the JSON document) of `--policy`, or (None, None)."""
    if path is None:
        return None, None
    from runtime.policy_file import load_policy

    policy = load_policy(path)
    from fluid.file_input import read_json

    return policy, read_json(path, what="policy file")


def warn_policy_mismatch(config) -> None:
    """With --accept-policy-mismatch, say on stderr what differs (config.json records it too)."""
    from runtime.simrun import policy_differences

    if config.policy is not None and config.accept_policy_mismatch:
        for line in policy_differences(config.policy, config.workload, config.rate_scale):
            print(f"warning: policy mismatch accepted: {line}", file=sys.stderr)


#: the fluid benchmark's table: (header, format, RunSummary field)
FLUID_COLUMNS = (
    ("scheduler", "{}", "scheduler"),
    ("tok/s", "{:.1f}", "decode_throughput_tokens_per_s"),
    ("lat mean s", "{:.3f}", "mean_latency_s"),
    ("lat p99 s", "{:.3f}", "p99_latency_s"),
    ("TTFT mean s", "{:.3f}", "mean_ttft_s"),
    ("TBT p99 s", "{:.4f}", "p99_tbt_s"),
    ("restarts", "{}", "restarts"),
    ("peak KV", "{}", "peak_kv_tokens"),
    ("done", "{}", "completed"),
)

#: vLLM's serving-benchmark measures (milliseconds, as `vllm bench serve` prints them) and SLOs
SERVING_COLUMNS = (
    ("scheduler", "{}", "scheduler"),
    ("req/s", "{:.2f}", "request_throughput"),
    ("out tok/s", "{:.1f}", "output_throughput"),
    ("total tok/s", "{:.1f}", "total_token_throughput"),
    ("TTFT mean ms", "{:.2f}", "mean_ttft_ms"),
    ("TTFT p99 ms", "{:.2f}", "p99_ttft_ms"),
    ("TPOT mean ms", "{:.2f}", "mean_tpot_ms"),
    ("ITL p99 ms", "{:.2f}", "p99_itl_ms"),
    ("E2EL mean ms", "{:.2f}", "mean_e2el_ms"),
    ("TTFT SLO %", "{:.1%}", "ttft_slo_attainment"),
    ("TBT SLO %", "{:.1%}", "tbt_slo_attainment"),
    ("goodput req/s", "{:.2f}", "request_goodput"),
)


def _cells(summary: RunSummary, columns) -> list[str]:
    out = []
    for _, fmt, name in columns:
        value = summary.value(name)
        out.append("-" if value is None else fmt.format(value).rstrip("%"))
    return out


def format_table(summaries: list[RunSummary], fluid_throughput: float | None = None) -> str:
    """One row per scheduler: decode throughput, latency, TTFT, TBT, restarts, peak KV (the fluid
    benchmark's measures); `fluid_throughput` adds the fluid optimum throughput* as a first row."""
    rows = []
    if fluid_throughput is not None:
        rows.append(["fluid*", f"{fluid_throughput:.1f}"] + ["-"] * (len(FLUID_COLUMNS) - 2))
    rows += [_cells(s, FLUID_COLUMNS) for s in summaries]
    return render_table([h for h, _, _ in FLUID_COLUMNS], rows)


def format_serving_table(summaries: list[RunSummary]) -> str:
    """One row per scheduler in vLLM's serving-benchmark terms (ms), with SLO attainment and goodput."""
    return render_table([h for h, _, _ in SERVING_COLUMNS], [_cells(s, SERVING_COLUMNS) for s in summaries])


def format_tables(summaries: list[RunSummary], fluid_throughput: float | None = None) -> str:
    """Both tables, as `simulate`, `compare`, `demo` and `run` print them."""
    return format_table(summaries, fluid_throughput) + "\n\n" + format_serving_table(summaries)


def run(args) -> int:
    from fluid.file_output import check_out_dir, finite_json
    from runtime.results import write_run_folder
    from runtime.simrun import policy_scheduler, run_simulation
    from runtime.summary_checks import short_window_warning

    policy, document = load_policy_arg(args.policy)
    scheduler = args.scheduler
    if scheduler is None:
        if policy is None:
            raise InputError(f"give --policy POLICY.json or --scheduler NAME ({', '.join(SCHEDULERS)})", field="scheduler")
        scheduler = policy_scheduler(policy)
    config = base_config(args, scheduler, policy, document, trace=args.trace_types)
    warn_policy_mismatch(config)
    if args.out:
        check_out_dir(args.out)
    from runtime.progress import RequestProgress, progress_enabled

    with RequestProgress(config.num_requests, config.scheduler, enabled=progress_enabled(args.quiet)) as progress:
        output = run_simulation(config, progress=progress)
    if args.out:
        write_run_folder(args.out, output)
    if args.json:
        print_json(finite_json(output.summary.to_dict()))
    else:
        print(format_tables([output.summary]))
    warning = short_window_warning(output.summary)
    if warning:
        print(warning, file=sys.stderr)
    if not args.json:
        if args.out:
            print(f"run folder: {args.out}")
    return 0
