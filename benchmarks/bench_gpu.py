"""GPU benchmark of the lean runtime against the ceilings it is bound by (Llama-2-7B shape, bf16).

    PYTHONPATH=. python benchmarks/bench_gpu.py --out docs/bench-gpu-h200.json

One process measures, in order: the two ceilings (device-to-device copy bandwidth, counting bytes
read + written; the bf16 matmul rate on 8192³), transformers' own eager forward with its
DynamicCache (the reference users would reach for), then the runtime's steps through
`Engine.execute` (host preparation, forward or decode CUDA graph, sampling, sync) and, for decode
graphs, the device-only replay time. Floors: decode = (weight bytes + KV bytes read) / bandwidth;
prefill = FLOPs / matmul rate. Also the scheduler's host cost per step at 128 running requests.
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

import torch

from runtime.gpu.checkpoint import build_random_model
from runtime.gpu.engine import Engine
from runtime.gpu.setup import build_pool
from runtime.kv_blocks import KVBlockManager
from runtime.gpu.model import LlamaRunner
from runtime.gpu.model_presets import resolve_model_config
from runtime.request import Request
from runtime.gpu.step_timer import StepTimer, cuda_event_time_s


def ceilings() -> dict:
    n = 4 * 2**30
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_s = cuda_event_time_s(lambda: b.copy_(a))
    del a, b
    m = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    k = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    mm_s = cuda_event_time_s(lambda: m @ k)
    del m, k
    torch.cuda.empty_cache()
    return {"copy_bytes_per_s": 2 * n / copy_s, "matmul_flop_per_s": 2 * 8192**3 / mm_s}


def linear_flops_per_token(cfg) -> int:
    h, inter = cfg.hidden_size, cfg.intermediate_size
    d = h // cfg.num_attention_heads
    qkv = h * (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * d
    return 2 * cfg.num_hidden_layers * (qkv + h * h + 3 * h * inter)


def prefill_flops(cfg, seq_lens) -> int:
    d = cfg.hidden_size // cfg.num_attention_heads
    attn = sum(2 * 2 * cfg.num_attention_heads * d * n * (n + 1) // 2 for n in seq_lens) * cfg.num_hidden_layers
    return linear_flops_per_token(cfg) * sum(seq_lens) + attn + 2 * cfg.vocab_size * cfg.hidden_size * len(seq_lens)


def transformers_reference(hf, cfg) -> dict:
    """transformers' eager forward (its default attention, DynamicCache), same weights and shapes."""
    out = {"attn_implementation": hf.config._attn_implementation}
    with torch.no_grad():
        for label, batch, prompt in (("decode_b1_ctx512", 1, 512), ("decode_b64_ctx512", 64, 512)):
            ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device="cuda")
            res = hf(input_ids=ids, use_cache=True)
            cache = res.past_key_values
            nxt = res.logits[:, -1:].argmax(-1)
            times = []
            for _ in range(12):
                torch.cuda.synchronize()
                t = time.perf_counter()
                res = hf(input_ids=nxt, past_key_values=cache, use_cache=True)
                nxt = res.logits[:, -1:].argmax(-1)
                torch.cuda.synchronize()
                times.append(time.perf_counter() - t)
            out[label + "_s"] = statistics.median(times[2:])
            del res, cache
            torch.cuda.empty_cache()
        for label, shape in (("prefill_2048_s", (1, 2048)), ("prefill_8x512_s", (8, 512))):
            ids = torch.randint(0, cfg.vocab_size, shape, device="cuda")
            out[label] = cuda_event_time_s(lambda: hf(input_ids=ids, use_cache=False, logits_to_keep=1), repeats=5)
    torch.cuda.empty_cache()
    return out


def scheduler_host_cost(name: str, running: int = 128, steps: int = 200) -> dict:
    """Median host time of schedule() + complete_step() with `running` requests decoding."""
    from runtime.schedulers import make_scheduler

    sched = make_scheduler(name, KVBlockManager(4_000_000, 16, track_block_ids=True))
    for i in range(running):
        sched.add_request(Request(i, 0.0, 512, 100_000))
    now, times = 0.0, []
    for step in range(running + steps):
        t = time.perf_counter()
        batch = sched.schedule(now)
        all_decodes = len(batch.items) == running and not any(w.is_prefill for w in batch.items)
        sched.complete_step(batch, now, now + 0.01)
        if step >= running and all_decodes:
            times.append(time.perf_counter() - t)
        now += 0.01
    return {"scheduler": name, "running": running, "steps_measured": len(times), "median_s": statistics.median(times) if times else None}


def decode_graph_variants(runner, pool, batch: int = 1, ctx: int = 512) -> dict:
    """Device time of one decode forward replayed as a CUDA graph, with the ≤ 4-row GEMV path
    (runtime.gpu.kernels.gemv_triton) off and as planned: the variants compared in the same process."""
    from runtime.gpu.model import StepInputs

    dev, bs = runner.device, pool.block_size
    per = -(-(ctx + 1) // bs)
    tables = torch.arange(batch * per, device=dev, dtype=torch.int32).view(batch, per)
    step = StepInputs(
        torch.zeros(batch, dtype=torch.int64, device=dev), torch.full((batch,), ctx, device=dev),
        (tables[:, ctx // bs].long() * bs + ctx % bs), [], tables, torch.full((batch,), ctx + 1, dtype=torch.int32, device=dev), None, num_decode_rows=batch,
    )
    out, mode = {"batch": batch, "ctx": ctx}, runner.decode_gemv_mode
    for label, forced in (("cublas_fused", "off"), ("gemv_as_planned", mode)):
        runner.decode_gemv_mode = forced
        runner.forward(step, pool)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            runner.forward(step, pool)
        out[label + "_device_s"] = cuda_event_time_s(graph.replay, repeats=50)
        del graph
    runner.decode_gemv_mode = mode
    plan = runner.gemv_plan
    out["gemv_plan"] = None if plan is None else {"enabled": plan.enabled, "timings_s": plan.timings_s}
    return out


def kernel_profile(runner, pool, batch: int, ctx: int, new_tokens: int = 1, top: int = 10) -> dict:
    """Per-kernel device time of one eager forward (torch.profiler): where a step's time goes."""
    from torch.profiler import ProfilerActivity, profile

    from runtime.gpu.attention import PrefillSeq
    from runtime.gpu.model import StepInputs

    dev = runner.device
    bs = pool.block_size
    if new_tokens == 1:  # `batch` decodes over `ctx` tokens in consecutive blocks
        per = -(-(ctx + 1) // bs)
        tables = torch.arange(batch * per, device=dev, dtype=torch.int32).view(batch, per)
        step = StepInputs(
            torch.zeros(batch, dtype=torch.int64, device=dev), torch.full((batch,), ctx, device=dev),
            (tables[:, ctx // bs].long() * bs + ctx % bs), [], tables, torch.full((batch,), ctx + 1, dtype=torch.int32, device=dev), None, num_decode_rows=batch,
        )
    else:
        step = StepInputs(
            torch.zeros(new_tokens, dtype=torch.int64, device=dev), torch.arange(new_tokens, device=dev), torch.arange(new_tokens, device=dev),
            [PrefillSeq(0, new_tokens, 0, None)], None, None, torch.tensor([new_tokens - 1], device=dev),
        )
    for _ in range(3):
        runner.forward(step, pool)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        runner.forward(step, pool)
        torch.cuda.synchronize()
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA" or getattr(e, "self_device_time_total", 0) > 0]
    rows = sorted(({"kernel": e.key[:90], "count": e.count, "total_s": e.self_device_time_total / 1e6} for e in events), key=lambda r: -r["total_s"])
    rows = [r for r in rows if r["total_s"] > 0]
    return {"batch": batch, "ctx": ctx, "new_tokens": new_tokens, "kernels": sum(r["count"] for r in rows), "kernel_time_s": sum(r["total_s"] for r in rows), "top": rows[:top]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/bench-gpu.json")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--kv-tokens", type=int, default=128 * 1024 + 8192,
                    help="KV pool size; a decode point that does not fit runs at the longest context that does (an 80 GB card needs ~100000)")
    args = ap.parse_args()
    cfg = resolve_model_config(args.model)
    res = {
        "device": torch.cuda.get_device_name(),
        "versions": {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]},
        "cpu": platform.processor() or platform.machine(),
        "model": args.model,
    }
    try:
        import transformers
        import triton

        res["versions"].update(transformers=transformers.__version__, triton=triton.__version__)
        res["lscpu_model"] = [l for l in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines() if "Model name" in l]
    except Exception as err:  # noqa: BLE001 - best-effort machine description
        res["lscpu_model"] = str(err)
    from runtime.gpu.host_info import describe_host

    from runtime.gpu.attention import PREFILL_BLOCK_M, PREFILL_NUM_STAGES, PREFILL_NUM_WARPS

    res["host"] = describe_host()
    res["varlen_prefill_tile"] = {"block_m": PREFILL_BLOCK_M, "num_warps": PREFILL_NUM_WARPS, "num_stages": PREFILL_NUM_STAGES}
    res["ceilings"] = ceil = ceilings()
    print(json.dumps(res, indent=1), flush=True)
    hf = build_random_model(cfg, dtype=torch.bfloat16, device="cuda")
    runner = LlamaRunner.from_hf(hf)
    res["fused_ops"] = runner.use_fused_ops
    res["transformers_eager"] = transformers_reference(hf, cfg)
    print(json.dumps(res["transformers_eager"]), flush=True)
    del hf
    torch.cuda.empty_cache()
    weight_bytes = runner.weight_bytes
    pool, info = build_pool(runner, kv_tokens=args.kv_tokens, block_size=16)
    engine = Engine(runner, pool)
    timer = StepTimer(engine)
    kv_per_token = 2 * cfg.num_hidden_layers * cfg.num_key_value_heads * (cfg.hidden_size // cfg.num_attention_heads) * 2
    bw, rate = ceil["copy_bytes_per_s"], ceil["matmul_flop_per_s"]
    rows = {}
    for batch, ctx in ((1, 512), (64, 512), (128, 1024)):
        while batch * (-(-(ctx + 1) // 16) + 1) * 16 > info.kv_capacity_tokens and ctx > 64:
            ctx //= 2  # the point does not fit this card's pool: the longest context that does
        label = f"decode_b{batch}_ctx{ctx}"
        step_s, _ = timer.time_s([(1, ctx)] * batch, repeats=20)
        host_s = timer.last_host_s
        bucket = engine.graphs.bucket_for(batch)
        graph = engine.graphs._graphs[bucket][0]
        device_s = cuda_event_time_s(graph.replay)  # inputs of the last step are still in the static buffers
        floor_weights = weight_bytes / bw
        floor = (weight_bytes + batch * (ctx + 1) * kv_per_token) / bw
        rows[label] = {
            "step_s": step_s, "device_s": device_s, "host_prep_s": host_s,
            "floor_weights_only_s": floor_weights, "floor_s": floor,
            "ratio_step_to_floor": step_s / floor, "ratio_device_to_floor": device_s / floor,
            "target": "≤ 1.3× weight bytes / bandwidth" if batch == 1 else "≤ 1.3× (weights + KV read) / bandwidth",
            "ratio_step_to_weight_floor": step_s / floor_weights,
        }
        print(label, rows[label], flush=True)
    for label, seqs in (("prefill_2048", [2048]), ("prefill_8x512", [512] * 8)):
        step_s, _ = timer.time_s([(n, 0) for n in seqs], repeats=10)
        flops = prefill_flops(cfg, seqs)
        rows[label] = {"step_s": step_s, "flops": flops, "achieved_flop_per_s": flops / step_s, "fraction_of_matmul_rate": flops / step_s / rate, "target": "≥ 0.60 of the matmul rate"}
        print(label, rows[label], flush=True)
    res["runtime"] = rows
    try:
        res["decode_b1_variants"] = decode_graph_variants(runner, pool)
        print(json.dumps(res["decode_b1_variants"]), flush=True)
    except Exception as err:  # noqa: BLE001 - a diagnostic, never fatal
        res["decode_b1_variants"] = {"error": repr(err)}
        print("variants failed", repr(err), flush=True)
    res["kernel_profile"] = []
    for args_ in ((1, 512), (64, 512), (1, 0, 2048)):
        try:
            res["kernel_profile"].append(kernel_profile(runner, pool, *args_))
            print(json.dumps(res["kernel_profile"][-1]), flush=True)
        except Exception as err:  # noqa: BLE001 - the profile is a diagnostic, never fatal
            res["kernel_profile"].append({"args": args_, "error": repr(err)})
            print("profile failed", args_, repr(err), flush=True)
    res["scheduler_host"] = [scheduler_host_cost(n) for n in ("sarathi", "vllm-v1", "fcfs")]
    host128 = next(row["host_prep_s"] for label, row in rows.items() if label.startswith("decode_b128_"))
    res["host_per_step_128_s"] = {s["scheduler"]: (s["median_s"] or 0) + host128 for s in res["scheduler_host"]}
    print(json.dumps(res["scheduler_host"]), flush=True)
    res["pool"] = {"kv_capacity_tokens": info.kv_capacity_tokens, "pool_bytes": info.pool_bytes, "weight_bytes": weight_bytes, "warmup_peak_bytes": info.warmup_peak_bytes}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float) + "\n")


if __name__ == "__main__":
    main()
