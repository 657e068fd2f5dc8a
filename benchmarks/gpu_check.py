"""GPU correctness and kernel check: paged decode kernel vs torch, 7B/8B engine vs transformers.

    PYTHONPATH=. python benchmarks/gpu_check.py --out docs/gpu-check.json

Records: kernel max error over shapes (MHA and GQA), the kernel's bandwidth over tile settings,
and for each model shape the greedy-token agreement and logit error of the engine (chunked
prefill, mixed batches, evictions and restarts, CUDA-graph decodes) against one transformers
forward with the same weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from engine_helpers import TinyChunkedScheduler, reference_check  # noqa: E402

from runtime.gpu.attention import paged_decode_reference  # noqa: E402
from runtime.gpu.kernels.attention_triton import paged_decode_triton  # noqa: E402
from runtime.gpu.checkpoint import build_random_model  # noqa: E402
from runtime.gpu.engine import Engine  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.gpu.kv_pool import KVPool, PoolShape  # noqa: E402
from runtime.gpu.model import LlamaRunner  # noqa: E402
from runtime.gpu.model_presets import resolve_model_config  # noqa: E402
from runtime.request import Request  # noqa: E402


def random_paged(batch, ctx, heads, kv_heads, d, block_size=16, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    blocks_per_seq = -(-ctx // block_size)
    num_blocks = batch * blocks_per_seq + 1
    k = torch.randn(num_blocks, block_size, kv_heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
    v = torch.randn(num_blocks, block_size, kv_heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
    perm = torch.randperm(num_blocks - 1, device="cuda", generator=g)[: batch * blocks_per_seq]
    tables = perm.view(batch, blocks_per_seq).to(torch.int32)
    lens = torch.randint(1, ctx + 1, (batch,), device="cuda", generator=g, dtype=torch.int32)
    lens[0] = ctx
    q = torch.randn(batch, heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
    return q, k, v, tables, lens


def kernel_check() -> dict:
    errors = []
    for batch, ctx, heads, kvh in [(1, 1, 32, 32), (3, 100, 32, 32), (8, 777, 32, 8), (5, 2048, 8, 2), (16, 64, 4, 4)]:
        q, k, v, t, lens = random_paged(batch, ctx, heads, kvh, 128)
        ref = paged_decode_reference(q, k, v, t, lens, 128**-0.5).float()
        got = paged_decode_triton(q, k, v, t, lens, 128**-0.5).float()
        errors.append({"batch": batch, "ctx": ctx, "heads": heads, "kv_heads": kvh, "max_abs_err": (got - ref).abs().max().item()})
    sweep = []
    for batch, ctx in [(64, 512), (128, 1024)]:
        q, k, v, t, lens = random_paged(batch, ctx, 32, 32, 128)
        lens.fill_(ctx)
        kv_bytes = 2 * batch * ctx * 32 * 128 * 2
        for tile in (32, 64, 128):
            for warps in (2, 4, 8):
                for stages in (1, 2, 3):
                    fn = lambda: paged_decode_triton(q, k, v, t, lens, 0.088, tile_tokens=tile, num_warps=warps, num_stages=stages)  # noqa: E731
                    fn()
                    torch.cuda.synchronize()
                    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    times = []
                    for _ in range(20):
                        start.record()
                        fn()
                        stop.record()
                        stop.synchronize()
                        times.append(start.elapsed_time(stop) / 1e3)
                    med = sorted(times)[len(times) // 2]
                    sweep.append({"batch": batch, "ctx": ctx, "tile": tile, "warps": warps, "stages": stages, "median_s": med, "gb_per_s": kv_bytes / med / 1e9})
    return {"errors": errors, "sweep": sweep}


def engine_check(model_name: str, num_requests: int, dtype=torch.bfloat16) -> dict:
    cfg = resolve_model_config(model_name)
    t = time.perf_counter()
    hf = build_random_model(cfg, dtype=dtype, device="cuda")
    build_s = time.perf_counter() - t
    runner = LlamaRunner.from_hf(hf)
    head_dim = cfg.hidden_size // cfg.num_attention_heads
    block_size, num_blocks = 16, 1024
    pool = KVPool(PoolShape(cfg.num_hidden_layers, num_blocks, block_size, cfg.num_key_value_heads, head_dim, 2), dtype=dtype, device="cuda")
    out = {"model": model_name, "dtype": str(dtype), "build_s": build_s}
    for graphs in (True, False):
        engine = Engine(runner, pool, use_cuda_graphs=graphs, keep_logits=True, seed=1)
        kv = KVBlockManager(num_blocks * block_size, block_size, track_block_ids=True)
        sched = TinyChunkedScheduler(kv, token_budget=256, max_seqs=6, evict_every=9)
        reqs = [Request(i, 0.0, 40 + 97 * i, 12 + 3 * i) for i in range(num_requests)]
        res = engine.run(sched, reqs)
        tokens = sum(r.output_tokens + 1 for r in reqs)
        mism, max_diff, max_ref = reference_check(hf, engine, reqs, device="cuda")
        out["graphs" if graphs else "eager"] = {
            "requests": num_requests,
            "finished": sum(r.finished for r in reqs),
            "restarts": sum(r.restarts for r in reqs),
            "graph_steps": sum(s.graph for s in res.steps),
            "steps": res.num_steps,
            "sampled_tokens": tokens,
            "token_mismatches_vs_transformers": mism,
            "token_agreement": 1 - mism / tokens,
            "max_abs_logit_diff": max_diff,
            "max_abs_reference_logit": max_ref,
            "restart_token_mismatches": res.restart_token_mismatches,
            # steps of ≤ 4 rows run the weight-streaming GEMV path when its plan is enabled
            "steps_of_at_most_4_rows": sum(s.shape.new_tokens <= 4 for s in res.steps),
            "decode_gemv_enabled": None if runner.gemv_plan is None else runner.gemv_plan.enabled,
        }
        print(model_name, out["graphs" if graphs else "eager"], flush=True)
    del hf, runner, pool
    torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/gpu-check.json")
    ap.add_argument("--models", default="llama-2-7b,llama-3-8b")
    ap.add_argument("--fp32-models", default="llama-2-7b", help="also check these in fp32 (tight tolerance)")
    ap.add_argument("--skip-kernel", action="store_true")
    args = ap.parse_args()
    result = {"device": torch.cuda.get_device_name(), "torch": torch.__version__}
    if not args.skip_kernel:
        result["kernel"] = kernel_check()
        print(json.dumps(result["kernel"]["errors"]), flush=True)
        best = sorted(result["kernel"]["sweep"], key=lambda r: (r["batch"], r["median_s"]))
        print(json.dumps(best[:3] + [r for r in best if r["batch"] == 128][:3]), flush=True)
    result["engines"] = [engine_check(m, 8) for m in args.models.split(",") if m]
    result["engines"] += [engine_check(m, 8, torch.float32) for m in args.fp32_models.split(",") if m]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
