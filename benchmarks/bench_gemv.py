"""Batch-1 decode on the GPU: the weight-streaming GEMV (runtime.gpu.kernels.gemv_triton) against cuBLAS.

    PYTHONPATH=. python benchmarks/bench_gemv.py --out docs/bench-gemv-h200.json

Part 1 sweeps tile configurations of each product of a Llama layer (QKV and gate/up with the
RMSNorm folded in, O with the residual add, down with SiLU·mul and the residual add, the final
RMSNorm + LM head) over all 32 layers' own weights as one CUDA graph, against cuBLAS with the
separate norm / SiLU kernels that path needs, after checking each configuration against an fp32
torch reference on fresh random inputs. Part 2 builds the model and times the
whole decode step at batch 1 (context 512) both ways: the graph replay alone and the engine's
step (host preparation, replay, sampling), against the weight floor of the same run's copy
bandwidth.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton

from bench_gpu import ceilings, cuda_time_s, kernel_profile
from runtime.gpu.gemv_plan import GemvPlan, graph_time_s, product_sweeps
from runtime.gpu.kernels.gemv_triton import GemvConfig, gemv
from runtime.gpu.model import LayerWeights
from runtime.gpu.model_presets import resolve_model_config

WIDE = [GemvConfig(bn, bk, sk, w, st) for (bn, bk, sk), st, w in itertools.product(
    [(16, 256, 1), (32, 256, 1), (32, 128, 1), (64, 128, 1), (128, 64, 1), (128, 128, 1), (128, 256, 1), (256, 64, 1),
     (64, 256, 1), (256, 128, 1), (128, 128, 2), (128, 256, 2), (64, 256, 2)], [3, 4, 5], [4, 8])] + [
    GemvConfig(128, 128, 1, 8, 6), GemvConfig(128, 64, 1, 8, 8), GemvConfig(128, 64, 1, 4, 12), GemvConfig(128, 64, 1, 8, 12), GemvConfig(64, 128, 1, 8, 8)]
NARROW = [GemvConfig(bn, bk, sk, w, st) for (bn, sk), bk, st, w in itertools.product(
    [(16, 1), (16, 2), (32, 1), (32, 2), (32, 4), (64, 2), (64, 4), (64, 8), (128, 4), (128, 8), (128, 16)], [64, 128, 256], [3, 4, 6], [4, 8])]


def random_layers(cfg, device, dtype=torch.bfloat16) -> list[LayerWeights]:
    h, inter = cfg.hidden_size, cfg.intermediate_size
    d = h // cfg.num_attention_heads
    qkv_rows = (cfg.num_attention_heads + 2 * cfg.num_key_value_heads) * d
    g = torch.Generator(device=device).manual_seed(0)

    def w(*shape):
        return (torch.randn(*shape, device=device, generator=g) * 0.02).to(dtype)

    def norm():
        return (1 + 0.1 * torch.randn(h, device=device, generator=g)).to(dtype)

    return [LayerWeights(norm(), w(qkv_rows, h), w(h, cfg.num_attention_heads * d), norm(), w(2 * inter, h), w(h, inter))
            for _ in range(cfg.num_hidden_layers)]


def check(name: str, weight, norm_w, config: GemvConfig, rows: int, eps: float) -> float:
    """Relative error of one configuration against an fp32 torch reference, fresh inputs (the
    product with its norm / SiLU / residual add; the QKV RoPE epilogue has its own GPU test)."""
    n, k = weight.shape
    dev, dt = weight.device, weight.dtype
    silu = name == "down"
    x = torch.randn(rows, 2 * k if silu else k, device=dev, dtype=dt)
    add = name in ("o", "down")
    residual = torch.randn(rows, n, device=dev, dtype=dt)
    xf = x.float()
    if silu:
        gate, up = xf.chunk(2, dim=-1)
        xf = F.silu(gate) * up
    if norm_w is not None:
        xf = norm_w.float() * xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    ref = xf @ weight.float().T + (residual.float() if add else 0)
    if add:  # an element the kernel skipped keeps the residual alone and shows in the error
        out = residual.clone()
        gemv(x, weight, add_to=out, silu=silu, config=config)
    else:
        out = gemv(x, weight, norm_weight=norm_w, eps=eps, config=config)
    return ((out.float() - ref).norm() / ref.norm()).item()


def sweep(layers, head, heads, eps: float, rows: int, repeats: int) -> dict:
    sweeps = product_sweeps(layers, eps, rows, head, heads)
    result = {}
    for name, (triton_sweep, cublas_sweep) in sweeps.items():
        weight = head[0] if name == "lm_head" else getattr(layers[0], name)
        norm_w = {"qkv": layers[0].input_norm, "gate_up": layers[0].post_norm, "lm_head": head[1]}.get(name)
        count = 1 if name == "lm_head" else len(layers)
        bytes_ = weight.numel() * weight.element_size() * count
        cublas_s = graph_time_s(cublas_sweep, repeats)
        xin = torch.randn(rows, weight.shape[1], device=weight.device, dtype=weight.dtype)
        weights = [weight] if name == "lm_head" else [getattr(w, name) for w in layers]
        row = {"bytes": bytes_, "cublas_with_side_kernels_s": cublas_s, "configs": {},
               "cublas_product_only_s": graph_time_s(lambda: [F.linear(xin, w) for w in weights], repeats)}
        t0 = time.perf_counter()
        for c in (WIDE if weight.shape[0] >= 8192 else NARROW):
            try:
                err = check(name, weight, norm_w, c, rows, eps)
                if not err < 2e-2:  # NaN fails too
                    row["configs"][c.label] = {"error": f"rel err {err}"}
                    continue
                t = graph_time_s(triton_sweep(c), repeats)
            except triton.runtime.errors.OutOfResources as e:
                row["configs"][c.label] = {"error": "out of resources: " + str(e)[:80]}
                continue
            row["configs"][c.label] = {"s": t, "rel_err": err, "bytes_per_s": bytes_ / t}
        ok = {k: v for k, v in row["configs"].items() if "s" in v}
        best = min(ok, key=lambda k: ok[k]["s"])
        row.update(best=best, best_s=ok[best]["s"], best_bytes_per_s=bytes_ / ok[best]["s"], cublas_bytes_per_s=bytes_ / row["cublas_product_only_s"],
                   sweep_wall_s=time.perf_counter() - t0)
        result[name] = row
        print(f"{name:8s} cuBLAS {row['cublas_product_only_s']*1e3:7.3f} ms (+side kernels {cublas_s*1e3:7.3f})  "
              f"best Triton {row['best_s']*1e3:7.3f} ms [{best}]  {row['best_bytes_per_s']/1e12:.2f} vs {row['cublas_bytes_per_s']/1e12:.2f} TB/s", flush=True)
    return result


def attention_sweep(cfg, ctx: int = 512, repeats: int = 20) -> dict:
    """Split-context decode attention at batch 1 over 32 layers' own caches (one graph): warps per
    program × tokens per partition."""
    from runtime.gpu.kernels.attention_triton import paged_decode_triton

    heads, kv_heads, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads
    blocks = -(-(ctx + 1) // 16)
    caches = [tuple(torch.randn(blocks, 16, kv_heads, d, device="cuda", dtype=torch.bfloat16) for _ in "kv") for _ in range(cfg.num_hidden_layers)]
    table = torch.arange(blocks, device="cuda", dtype=torch.int32)[None]
    lens = torch.tensor([ctx + 1], device="cuda", dtype=torch.int32)
    q = torch.randn(1, heads, d, device="cuda", dtype=torch.bfloat16)
    kv_bytes = sum(k.numel() * k.element_size() * 2 for k, _ in caches) * (ctx + 1) / (blocks * 16)
    out = {"kv_bytes": kv_bytes}
    for warps, part in itertools.product([2, 4, 8], [32, 64, 128]):
        t = graph_time_s(lambda: [paged_decode_triton(q, k, v, table, lens, 0.088, split=True, part_tokens=part, split_num_warps=warps) for k, v in caches], repeats)
        out[f"w{warps}_part{part}"] = t
        print(f"attention warps {warps} part {part}: {t*1e3:.3f} ms for {cfg.num_hidden_layers} layers ({kv_bytes / t / 1e12:.2f} TB/s)", flush=True)
    return out


def whole_step(cfg, configs: dict, bw: float, ctx: int = 512) -> dict:
    """Decode step at batch 1 on the built model: cuBLAS path vs the GEMV path with `configs`."""
    from runtime.gpu.checkpoint import build_random_model
    from runtime.gpu.engine import Engine
    from runtime.gpu.setup import build_pool
    from runtime.gpu.model import LlamaRunner
    from runtime.gpu.step_timer import StepTimer

    hf = build_random_model(cfg, dtype=torch.bfloat16, device="cuda")
    runner = LlamaRunner.from_hf(hf)
    del hf
    torch.cuda.empty_cache()
    floor = runner.weight_bytes / bw
    out = {"floor_weights_s": floor, "ctx": ctx}
    for label, plan in (("cublas", GemvPlan(enabled=False)), ("gemv", GemvPlan(enabled=True, configs=configs))):
        runner.gemv_plan = plan
        runner.decode_gemv_mode = "on"
        pool, _ = build_pool(runner, kv_tokens=16384, block_size=16)
        engine = Engine(runner, pool)
        timer = StepTimer(engine)
        step_s, _ = timer.time_s([(1, ctx)], repeats=30)
        graph = engine.graphs._graphs[engine.graphs.bucket_for(1)][0]
        device_s = cuda_time_s(graph.replay, repeats=50)
        out[label] = {"step_s": step_s, "device_s": device_s, "host_prep_s": timer.last_host_s,
                      "step_over_floor": step_s / floor, "device_over_floor": device_s / floor}
        print(label, json.dumps(out[label]), flush=True)
        out[label]["kernel_profile"] = kernel_profile(runner, pool, 1, ctx)
        print(json.dumps(out[label]["kernel_profile"]), flush=True)
        del engine, timer, pool, graph
        torch.cuda.empty_cache()
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="docs/bench-gemv.json")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--skip-step", action="store_true")
    args = ap.parse_args()
    cfg = resolve_model_config(args.model)
    res = {"device": torch.cuda.get_device_name(), "versions": {"torch": torch.__version__, "cuda": torch.version.cuda,
           "triton": triton.__version__, "python": sys.version.split()[0]}, "model": args.model, "rows": args.rows}
    res["ceilings"] = ceilings()
    print(json.dumps(res), flush=True)
    layers = random_layers(cfg, "cuda")
    g = torch.Generator(device="cuda").manual_seed(1)
    head = ((torch.randn(cfg.vocab_size, cfg.hidden_size, device="cuda", generator=g) * 0.02).to(torch.bfloat16),
            (1 + 0.1 * torch.randn(cfg.hidden_size, device="cuda", generator=g)).to(torch.bfloat16))
    heads = (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads)
    res["products"] = sweep(layers, head, heads, cfg.rms_norm_eps, args.rows, args.repeats)
    del layers, head
    torch.cuda.empty_cache()
    res["attention"] = attention_sweep(cfg)
    products = res["products"]
    res["sum"] = {"cublas_with_side_kernels_s": sum(p["cublas_with_side_kernels_s"] for p in products.values()),
                  "triton_best_s": sum(p["best_s"] for p in products.values())}
    print("sum", json.dumps(res["sum"]), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")
    if not args.skip_step:
        by_label = {c.label: c for c in WIDE + NARROW}
        res["step_b1"] = whole_step(cfg, {name: by_label[p["best"]] for name, p in products.items()}, res["ceilings"]["copy_bytes_per_s"])
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
