"""Streaming GEMV for decode steps of at most 4 rows, with the neighbouring elementwise work folded in.

At batch 1 a 7B decode step is bound by reading the weights once (13.5 GB), yet cuBLAS adds a
split-K reduce to some products and every layer still runs add+RMSNorm twice and SiLU·mul once as
separate kernels (each a few µs plus its gap inside the CUDA graph). Here a layer is four products
that each stream their weight once, one program per BLOCK_N output features:

- QKV and gate/up: RMSNorm of the residual in the prologue (each program recomputes the row
  scale from the whole hidden vector, 8 KB, cheap against the weight tile it streams);
- down: SiLU(gate)·up computed from the gate/up output while it is loaded;
- O and down: `residual += x·Wᵀ` in the epilogue (each program owns its output features, so the
  in-place add has no race).

Numerics follow transformers' Llama (and `runtime.fused_ops`): RMSNorm in fp32 cast to the model
dtype before the weight multiply, SiLU rounded before the multiply by `up`, the product rounded
to the model dtype before the residual add. fp32 products use IEEE fp32 (no TF32).

`GemvPlan.choose` times the Triton kernels against cuBLAS on the model's own weights (cycling
through every layer so L2 holds none of them) and enables the path only where it wins.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

MAX_ROWS = 4  # decode batches this path serves; larger batches keep cuBLAS


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, norm_ptr, out_ptr,
    M, N, K, stride_x, stride_w, stride_out, eps,
    NORM: tl.constexpr, SILU: tl.constexpr, ADD_TO_OUT: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows_n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_mask = rows_n < N
    ms = tl.arange(0, BLOCK_M)
    m_mask = ms < M
    dt = w_ptr.dtype.element_ty
    x_rows = x_ptr + ms[:, None].to(tl.int64) * stride_x
    if NORM:  # row scale of RMSNorm from the whole input row
        ss = tl.zeros([BLOCK_M], dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            ks = k0 + tl.arange(0, BLOCK_K)
            xv = tl.load(x_rows + ks[None, :], mask=m_mask[:, None] & (ks < K)[None, :], other=0.0).to(tl.float32)
            ss += tl.sum(xv * xv, axis=1)
        rstd = tl.rsqrt(ss / K + eps)
    acc = tl.zeros([BLOCK_M, BLOCK_N, BLOCK_K], dtype=tl.float32)
    w_rows = w_ptr + rows_n[:, None].to(tl.int64) * stride_w
    for k0 in range(0, K, BLOCK_K):
        ks = k0 + tl.arange(0, BLOCK_K)
        k_mask = ks < K
        xm = m_mask[:, None] & k_mask[None, :]
        w = tl.load(w_rows + ks[None, :], mask=n_mask[:, None] & k_mask[None, :], other=0.0)  # [BN, BK]
        if SILU:  # x holds gate | up, each K wide
            g = tl.load(x_rows + ks[None, :], mask=xm, other=0.0).to(tl.float32)
            u = tl.load(x_rows + K + ks[None, :], mask=xm, other=0.0).to(tl.float32)
            s = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
            xv = (s * u).to(dt)
        else:
            xv = tl.load(x_rows + ks[None, :], mask=xm, other=0.0)
            if NORM:
                nw = tl.load(norm_ptr + ks, mask=k_mask, other=0.0).to(tl.float32)
                xv = (nw[None, :] * (xv.to(tl.float32) * rstd[:, None]).to(dt).to(tl.float32)).to(dt)
        # CUDA-core FMAs into a [rows, BN, BK] accumulator, reduced once at the end: at ≤ 4 rows the
        # tensor cores would need the input padded to 16 rows (16× the prologue work per tile)
        acc += xv.to(tl.float32)[:, None, :] * w.to(tl.float32)[None, :, :]
    y = tl.sum(acc, axis=2).to(dt)
    out = out_ptr + ms[:, None].to(tl.int64) * stride_out + rows_n[None, :]
    o_mask = m_mask[:, None] & n_mask[None, :]
    if ADD_TO_OUT:
        prev = tl.load(out, mask=o_mask, other=0.0).to(tl.float32)
        y = (prev + y.to(tl.float32)).to(dt)
    tl.store(out, y, mask=o_mask)


@dataclass(frozen=True)
class GemvConfig:
    block_n: int
    block_k: int
    num_warps: int

    def __post_init__(self):
        for v in (self.block_n, self.block_k):
            if v < 8 or v & (v - 1):
                raise ValueError(f"GemvConfig blocks must be powers of two ≥ 8, got {self}")


DEFAULT_CONFIG = GemvConfig(8, 256, 4)
CANDIDATES = (GemvConfig(8, 256, 4), GemvConfig(16, 256, 4), GemvConfig(8, 512, 4), GemvConfig(16, 512, 8), GemvConfig(32, 128, 4))


def gemv(
    x: torch.Tensor,  # [M, K] (or [M, 2K] gate|up when silu)
    weight: torch.Tensor,  # [N, K]
    *,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    silu: bool = False,
    add_to: torch.Tensor | None = None,  # [M, N]: `add_to += result` in place, returned
    config: GemvConfig = DEFAULT_CONFIG,
) -> torch.Tensor:
    """y = f(x)·Wᵀ for M ≤ 4 rows; f = RMSNorm·norm_weight, SiLU(gate)·up, or identity."""
    m = x.shape[0]
    n, k = weight.shape
    assert m <= MAX_ROWS and x.stride(1) == 1 and weight.stride(1) == 1
    assert x.shape[1] == (2 * k if silu else k) and not (silu and norm_weight is not None)
    out = add_to if add_to is not None else torch.empty((m, n), dtype=weight.dtype, device=weight.device)
    assert out.shape == (m, n) and out.stride(1) == 1
    if m:
        _gemv_kernel[(triton.cdiv(n, config.block_n),)](
            x, weight, weight if norm_weight is None else norm_weight, out,
            m, n, k, x.stride(0), weight.stride(0), out.stride(0), eps,
            NORM=norm_weight is not None, SILU=silu, ADD_TO_OUT=add_to is not None,
            BLOCK_M=max(2, triton.next_power_of_2(m)), BLOCK_N=config.block_n, BLOCK_K=config.block_k, num_warps=config.num_warps,
        )
    return out


@dataclass
class GemvPlan:
    """Whether (and with which tile per product) decode steps of ≤ 4 rows use the Triton GEMV."""

    enabled: bool = False
    configs: dict[str, GemvConfig] = field(default_factory=dict)  # product name -> tile
    timings_s: dict = field(default_factory=dict)  # what the choice was based on (per product, per layer sweep)

    @classmethod
    def choose(cls, layers, eps: float, rows: int = 1, repeats: int = 7) -> "GemvPlan":
        """Times each product over all layers (cuBLAS vs every candidate tile) and enables the
        Triton path when its four products together beat cuBLAS's four (cuBLAS also needs the
        separate norm and SiLU kernels, not counted here: the comparison leans towards cuBLAS)."""
        dev, dt = layers[0].qkv.device, layers[0].qkv.dtype
        hidden = layers[0].o.shape[0]
        inter = layers[0].down.shape[1]
        res = torch.randn(rows, hidden, device=dev, dtype=dt)
        attn = torch.randn(rows, layers[0].o.shape[1], device=dev, dtype=dt)
        gu = torch.randn(rows, 2 * inter, device=dev, dtype=dt)
        act = torch.randn(rows, inter, device=dev, dtype=dt)
        scratch_o = torch.zeros(rows, hidden, device=dev, dtype=dt)  # residual stand-in for the in-place adds
        products = {
            "qkv": (lambda w, c: gemv(res, w.qkv, norm_weight=w.input_norm, eps=eps, config=c), lambda w: F.linear(res, w.qkv)),
            "o": (lambda w, c: gemv(attn, w.o, add_to=scratch_o, config=c), lambda w: F.linear(attn, w.o)),
            "gate_up": (lambda w, c: gemv(res, w.gate_up, norm_weight=w.post_norm, eps=eps, config=c), lambda w: F.linear(res, w.gate_up)),
            "down": (lambda w, c: gemv(gu, w.down, silu=True, add_to=scratch_o, config=c), lambda w: F.linear(act, w.down)),
        }

        def sweep_s(fn) -> float:
            for w in layers[:2]:
                fn(w)
            torch.cuda.synchronize()
            start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            times = []
            for _ in range(repeats):
                start.record()
                for w in layers:
                    fn(w)
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop) / 1e3)
            return statistics.median(times)

        plan = cls()
        total_triton = total_cublas = 0.0
        for name, (tri, ref) in products.items():
            cublas_s = sweep_s(ref)
            tried = {c: sweep_s(lambda w, c=c: tri(w, c)) for c in CANDIDATES}
            best = min(tried, key=tried.get)
            plan.configs[name] = best
            plan.timings_s[name] = {"cublas": cublas_s, "triton_best": tried[best], "best": [best.block_n, best.block_k, best.num_warps],
                                    "triton_all": {f"{c.block_n}x{c.block_k}w{c.num_warps}": t for c, t in tried.items()}}
            total_triton += tried[best]
            total_cublas += cublas_s
        plan.timings_s["total"] = {"cublas": total_cublas, "triton": total_triton, "rows": rows, "layers": len(layers)}
        plan.enabled = total_triton <= total_cublas
        return plan
