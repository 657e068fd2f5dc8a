"""Whether decode steps of ≤ 4 rows take the weight-streaming GEMV path, and with which tiles.

`GemvPlan.choose` times, on the model's own weights and as CUDA graphs over all layers (so L2 holds
no weights and host launch cost is out of the figure), each product with its folded work
(`runtime.gpu.kernels.gemv_triton`) against cuBLAS with the separate kernels that path still needs, and
enables the GEMV path only if it wins in total. `benchmarks/bench_gemv.py` runs the same sweeps
over a wider grid of tiles.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import triton

from runtime.gpu.kernels.gemv_triton import NARROW_CANDIDATES, WIDE_CANDIDATES, GemvConfig, RopeKV, gemv
from runtime.gpu.step_timer import cuda_event_time_s


def graph_time_s(fn, repeats: int = 20) -> float:
    """Median device time of `fn` (a sweep of launches) replayed as one CUDA graph, so the host's
    launch cost stays out of the figure."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        fn()  # compile, allocate scratch
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    seconds = cuda_event_time_s(graph.replay, repeats=repeats, warmup=1)
    del graph
    return seconds


def product_sweeps(layers, eps: float, rows: int = 1, head: tuple | None = None, heads: tuple | None = None) -> dict:
    """For each product of a layer: (Triton sweep given a config, cuBLAS sweep with the separate
    kernels that path still needs), each running the product over every layer's own weights;
    with `head` = (lm_head, final_norm) also the final RMSNorm + LM head; with `heads` =
    (num_heads, kv_heads, head_dim) the QKV product includes RoPE and the KV-cache write."""
    from runtime.gpu.kernels.fused_ops import add_rms_norm, rope_kv_write, silu_mul

    dev, dt = layers[0].qkv.device, layers[0].qkv.dtype
    hidden, inter = layers[0].o.shape[0], layers[0].down.shape[1]
    gen = torch.Generator(device=dev).manual_seed(0)
    res = torch.randn(rows, hidden, device=dev, dtype=dt, generator=gen)
    attn = torch.randn(rows, layers[0].o.shape[1], device=dev, dtype=dt, generator=gen)
    gu = torch.randn(rows, 2 * inter, device=dev, dtype=dt, generator=gen)
    scratch = torch.zeros(rows, hidden, device=dev, dtype=dt)  # residual stand-in for the in-place adds

    rope = None
    if heads is not None:
        num_heads, kv_heads, d = heads
        table = torch.randn(64, d, device=dev, dtype=dt, generator=gen)
        cache = torch.zeros(1, 16, kv_heads, d, device=dev, dtype=dt)
        rope = RopeKV(table, table.clone(), torch.arange(rows, device=dev), torch.arange(rows, device=dev), cache, cache.clone(), num_heads, kv_heads)

    def each_layer(fn):
        return lambda: [fn(w) for w in layers]

    def qkv_triton(c):
        return each_layer(lambda w: gemv(res, w.qkv, norm_weight=w.input_norm, eps=eps, config=c, rope=rope))

    def qkv_cublas(w):
        qkv = F.linear(add_rms_norm(scratch, attn, w.input_norm, eps), w.qkv)
        return qkv if rope is None else rope_kv_write(qkv, rope.cos, rope.sin, rope.positions, rope.slots, rope.k_cache, rope.v_cache, rope.num_heads, rope.kv_heads)

    sweeps = {
        "qkv": (qkv_triton, each_layer(qkv_cublas)),
        "o": (lambda c: each_layer(lambda w: gemv(attn, w.o, add_to=scratch, config=c)),
              each_layer(lambda w: F.linear(attn, w.o))),
        "gate_up": (lambda c: each_layer(lambda w: gemv(res, w.gate_up, norm_weight=w.post_norm, eps=eps, config=c)),
                    each_layer(lambda w: F.linear(add_rms_norm(scratch, attn, w.post_norm, eps), w.gate_up))),
        "down": (lambda c: each_layer(lambda w: gemv(gu, w.down, silu=True, add_to=scratch, config=c)),
                 each_layer(lambda w: F.linear(silu_mul(gu), w.down))),
    }
    if head is not None:
        lm_head, final_norm = head
        sweeps["lm_head"] = (lambda c: lambda: gemv(res, lm_head, norm_weight=final_norm, eps=eps, config=c),
                             lambda: F.linear(add_rms_norm(scratch, None, final_norm, eps), lm_head))
    return sweeps


def candidates_for(n_features: int) -> tuple[GemvConfig, ...]:
    return WIDE_CANDIDATES if n_features >= 8192 else NARROW_CANDIDATES


@dataclass
class GemvPlan:
    """Whether (and with which tile per product) decode steps of ≤ 4 rows use the Triton GEMV."""

    enabled: bool = False
    configs: dict[str, GemvConfig] = field(default_factory=dict)  # product name -> tile
    timings_s: dict = field(default_factory=dict)  # what the choice was based on (per product, per layer sweep)

    @classmethod
    def choose(cls, layers, eps: float, rows: int = 1, repeats: int = 20, head: tuple | None = None, heads: tuple | None = None) -> "GemvPlan":
        """Times each product over all layers, as CUDA graphs: every candidate tile with its folded
        work against cuBLAS with the add+RMSNorm / SiLU·mul kernels it needs beside it, and enables
        the Triton path when its four products together are faster."""
        plan = cls()
        total_triton = total_cublas = 0.0
        for name, (triton_sweep, cublas_sweep) in product_sweeps(layers, eps, rows, head, heads).items():
            cublas_s = graph_time_s(cublas_sweep, repeats)
            tried = {}
            n_features = (head[0] if name == "lm_head" else getattr(layers[0], name)).shape[0]
            for c in candidates_for(n_features):
                try:
                    tried[c] = graph_time_s(triton_sweep(c), repeats)
                except triton.runtime.errors.OutOfResources:  # e.g. fp32 tiles past shared memory
                    continue
            if not tried:
                plan.timings_s[name] = {"cublas": cublas_s, "triton_best": None}
                plan.timings_s["total"] = {"cublas": None, "triton": None, "rows": rows, "layers": len(layers)}
                return plan
            best = min(tried, key=tried.get)
            plan.configs[name] = best
            plan.timings_s[name] = {"cublas": cublas_s, "triton_best": tried[best], "best": best.label,
                                    "triton_all": {c.label: t for c, t in tried.items()}}
            total_triton += tried[best]
            total_cublas += cublas_s
        plan.timings_s["total"] = {"cublas": total_cublas, "triton": total_triton, "rows": rows, "layers": len(layers)}
        plan.enabled = total_triton < total_cublas
        return plan
