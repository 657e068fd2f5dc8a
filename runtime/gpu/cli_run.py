"""`fluidsched run WORKLOAD (--policy POLICY.json | --scheduler NAME) ...`: an open-loop real run.

Requests arrive at their (Poisson or trace) times on the wall clock while the model works; the
scheduler is called between steps exactly as in `fluidsched simulate`, and the run folder has the
same files and summary keys, plus `device`, library versions, and `steps.json` (each step's
composition and measured time). All input checks run before the weights are built.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time

from fluid.cli_json import print_json
from fluid.errors import InputError
from fluid.file_output import check_out_dir, finite_json
from runtime.gpu.requirements import require_gpu_packages


def check_block_size(block_size) -> None:
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise InputError(f"the block size must be a positive integer number of tokens, got {block_size!r}", field="block_size")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", help="workload YAML/JSON file or preset name")
    parser.add_argument("--policy", help="policy JSON from `fluidsched solve` (runs wait or nested-wait)")
    parser.add_argument("--accept-policy-mismatch", action="store_true",
                        help="run a policy solved for another workload (other hash, C or rates); differences recorded")
    parser.add_argument("--scheduler", help="scheduler name (fcfs, vllm-v1, sarathi, ...)")
    parser.add_argument("--model", help="preset (llama-2-7b, llama-2-13b, llama-3-8b, tiny-llama), a Hugging Face checkpoint folder "
                        "(config.json + safetensors) or a LlamaConfig JSON (default llama-2-7b)")
    parser.add_argument("--checkpoint", help="local safetensors checkpoint folder (default: random weights)")
    parser.add_argument("--device", default="cuda", help="cuda or cpu (default cuda)")
    parser.add_argument("--dtype", default="auto", help="bf16, fp16, fp32 or auto (bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--kv-tokens", type=int, help="KV pool size in tokens (default: the workload's kv_capacity_tokens)")
    parser.add_argument("--requests", type=int, default=200, help="number of requests (default 200)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every arrival rate (default 1)")
    parser.add_argument("--seed", type=int, default=0, help="arrival and prompt seed (default 0)")
    parser.add_argument("--block-size", type=int, default=16, help="KV block size in tokens (default 16)")
    parser.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="scheduler knob (repeatable)")
    parser.add_argument("--warmup", type=float, default=0.1, help="warm-up cut as a fraction of the arrival span (default 0.1)")
    parser.add_argument("--ttft-slo", type=float, default=0.5, help="TTFT bound for SLO attainment in s (default 0.5)")
    parser.add_argument("--horizon", type=float, help="stop at this wall-clock time in s")
    parser.add_argument("--no-cuda-graphs", action="store_true", help="run decode steps eagerly")
    parser.add_argument("--overlap-host", action="store_true",
                        help="schedule and prepare each step while the previous one runs on the GPU (not for slai: it decides on step end times)")
    parser.add_argument("--out", help="write the run folder here")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar (it shows only on a terminal)")


def run(args) -> int:
    from fluid.workload_io import load_workload
    from runtime.arrivals import make_requests
    from runtime.cli_simulate import load_policy_arg
    from runtime.simrun import SimConfig, parse_option, policy_scheduler

    # --- every input check first -----------------------------------------------------------
    require_gpu_packages("run")
    policy, document = load_policy_arg(args.policy)
    scheduler_name = args.scheduler or (policy_scheduler(policy) if policy is not None else None)
    if scheduler_name is None:
        raise InputError("give --policy POLICY.json or --scheduler NAME", field="scheduler")
    workload = load_workload(args.workload)
    check_block_size(args.block_size)
    if args.out:
        check_out_dir(args.out)
    capacity = args.kv_tokens if args.kv_tokens is not None else workload.kv_capacity_tokens
    if capacity is None or capacity < args.block_size:
        raise InputError(f"the KV budget must hold at least one block of {args.block_size} tokens, got {capacity}", field="kv_tokens")
    # C as the workload (or --kv-tokens) states it, which is what a policy is solved for; the pool
    # holds the whole blocks inside it, as the simulator's block manager does (23,000 tokens in
    # blocks of 16 are 1,437 blocks = 22,992 usable)
    usable_tokens = capacity // args.block_size * args.block_size
    if capacity != workload.kv_capacity_tokens:
        # --kv-tokens chose another C: a policy must have been solved for that C
        workload = dataclasses.replace(workload, kv_capacity_tokens=capacity)
    options = dict(parse_option(o) for o in args.option)
    config = SimConfig(
        workload=workload, scheduler=scheduler_name, num_requests=args.requests, seed=args.seed, rate_scale=args.rate_scale,
        block_size=args.block_size, options=options, policy=policy, policy_document=document, warmup_fraction=args.warmup,
        ttft_slo_s=args.ttft_slo, horizon_s=args.horizon, accept_policy_mismatch=args.accept_policy_mismatch,
    )
    requests = make_requests(workload, args.requests, args.seed, rate_scale=args.rate_scale)

    from runtime.gpu.setup import check_device, check_host_memory, model_and_checkpoint, model_config, resolve_dtype

    device = check_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    model_label = args.model or args.checkpoint or "llama-2-7b"
    args.model, args.checkpoint = model_and_checkpoint(args.model, args.checkpoint)
    model_cfg = model_config(args.model, args.checkpoint)
    from runtime.gpu.live import check_requests_fit

    check_requests_fit(requests, usable_tokens, args.block_size, model_cfg.max_position_embeddings)
    if device.type == "cpu":
        check_host_memory(model_cfg, dtype, usable_tokens, model_name=model_label)
    from runtime.kv_blocks import KVBlockManager
    from runtime.schedulers import make_scheduler

    scheduler = make_scheduler(scheduler_name, KVBlockManager(capacity, args.block_size, track_block_ids=True), **config.scheduler_knobs())
    if args.overlap_host and scheduler.reads_step_end_times:
        raise InputError(f"--overlap-host: {scheduler_name} decides on step end times, which an overlapped loop knows only a step late; "
                         "run it without --overlap-host", field="overlap_host")

    # --- the work --------------------------------------------------------------------------
    from runtime.gpu.engine import Engine
    from runtime.gpu.host_info import describe_host, versions
    from runtime.gpu.live import run_live
    from runtime.gpu.setup import build_pool, load_runner
    from runtime.results import RunOutput, write_json, write_run_folder
    from runtime.summary_checks import short_window_warning

    t_setup = time.perf_counter()
    runner = load_runner(model_cfg, args.checkpoint, dtype=dtype, device=device, seed=args.seed)
    pool, info = build_pool(runner, kv_tokens=usable_tokens, block_size=args.block_size)
    engine = Engine(runner, pool, use_cuda_graphs=not args.no_cuda_graphs, seed=args.seed)
    setup_s = time.perf_counter() - t_setup
    from runtime.progress import RequestProgress, progress_enabled

    with RequestProgress(len(requests), f"{scheduler_name} on {info.device_name}", enabled=progress_enabled(args.quiet)) as progress:
        live = run_live(engine, info, config, requests, scheduler=scheduler, watch=progress.watch, model_label=model_label,
                        dtype=str(dtype).replace("torch.", ""), overlap_host=args.overlap_host,
                        extra_details={"versions": versions(), "host": describe_host(), "setup_s": setup_s})
    summary, engine_steps = live.summary, live.step_rows
    details = summary.details
    run_config = live.config
    run_config.update({"model": model_cfg.to_dict(), "checkpoint": args.checkpoint})
    output = RunOutput(run_config, summary, [live.result.to_sim_result(capacity)], document)
    warning = short_window_warning(summary)
    if warning:
        print(warning, file=sys.stderr)
    if args.out:
        from fluid.file_output import atomic_folder

        with atomic_folder(args.out) as tmp:
            write_run_folder(tmp, output, atomic=False)
            write_json(tmp / "steps.json", engine_steps, compact=True)
    if args.json:
        print_json(finite_json(summary.to_dict()))
    else:
        from runtime.cli_simulate import format_tables

        print(format_tables([summary]))
        print(f"device: {info.device_name}; median step {details['median_step_s'] or math.nan:.4f} s; host {details['median_host_s'] or math.nan:.5f} s")
        if args.out:
            print(f"run folder: {args.out}")
    return 0
