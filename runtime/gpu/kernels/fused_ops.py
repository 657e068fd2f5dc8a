"""Fused elementwise Triton kernels for the CUDA forward (imported lazily by `runtime.gpu.model`).

An unfused Llama layer runs ~40 small kernels (RMSNorm in fp32 as several passes, RoPE as
slice/cat/mul/add, two `index_copy_` for the KV write, SiLU, mul, residual adds). At decode
batch sizes each costs a few µs even inside a CUDA graph, which is more than the weights take to
stream; at prefill sizes each is a full pass over a [tokens, hidden] tensor. Three kernels replace
them, so a layer is: add+RMSNorm, QKV GEMM, RoPE+KV write, attention, O GEMM, add+RMSNorm,
gate/up GEMM, SiLU·mul, down GEMM.

Numerics follow transformers' Llama bit for bit where the order allows: the residual add rounds
to the model dtype, RMSNorm runs in fp32 and casts before the weight multiply, RoPE rounds each
product and the sum to the model dtype (as `q * cos + rotate_half(q) * sin` does in bf16), SiLU
rounds before the multiply by `up`. In fp32 every cast is a no-op.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _add_rms_norm_kernel(
    res_ptr, delta_ptr, w_ptr, out_ptr,
    stride_res, stride_delta, stride_out,
    n_cols, eps,
    HAS_DELTA: tl.constexpr, BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < n_cols
    x = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
    if HAS_DELTA:
        d = tl.load(delta_ptr + row * stride_delta + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + d.to(tl.float32)).to(res_ptr.dtype.element_ty)
        tl.store(res_ptr + row * stride_res + cols, x, mask=mask)
    xf = x.to(tl.float32)
    var = tl.sum(xf * xf, axis=0) / n_cols
    rstd = tl.rsqrt(var + eps)
    y = (xf * rstd).to(out_ptr.dtype.element_ty).to(tl.float32)
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (w * y).to(out_ptr.dtype.element_ty), mask=mask)


def add_rms_norm(residual: torch.Tensor, delta: torch.Tensor | None, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """`residual += delta` in place (when given), then returns RMSNorm(residual)·weight. [T, hidden]."""
    rows, cols = residual.shape
    assert residual.stride(1) == 1 and (delta is None or delta.stride(1) == 1)
    out = torch.empty_like(residual)
    block = triton.next_power_of_2(cols)
    _add_rms_norm_kernel[(rows,)](
        residual, residual if delta is None else delta, weight, out,
        residual.stride(0), 0 if delta is None else delta.stride(0), out.stride(0),
        cols, eps,
        HAS_DELTA=delta is not None, BLOCK=block, num_warps=8 if block >= 4096 else 4,
    )
    return out


@triton.jit
def rope_halves(x1, x2, c1, c2, s1, s2, dt: tl.constexpr):
    """The two halves of x·cos + rotate_half(x)·sin, rotate_half(x) = (−x2, x1), from fp32 halves;
    each product and the sum rounded to `dt`, as torch does in the model dtype. Shared by the
    RoPE+KV-write kernel and the QKV GEMV's epilogue so both round alike."""
    o1 = ((x1 * c1).to(dt).to(tl.float32) + (-x2 * s1).to(dt).to(tl.float32)).to(dt)
    o2 = ((x2 * c2).to(dt).to(tl.float32) + (x1 * s2).to(dt).to(tl.float32)).to(dt)
    return o1, o2


@triton.jit
def _rope_kv_write_kernel(
    qkv_ptr, cos_ptr, sin_ptr, pos_ptr, slot_ptr,
    q_out_ptr, k_out_ptr, k_cache_ptr, v_cache_ptr,
    stride_qkv, stride_cos, stride_qo_t, stride_ko_t, stride_cache_slot, stride_cache_head,
    NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HALF: tl.constexpr, HEADS_PER_PROG: tl.constexpr,
):
    """One program per (token, group of HEADS_PER_PROG heads of the packed q|k heads)."""
    t = tl.program_id(0).to(tl.int64)
    heads = tl.program_id(1) * HEADS_PER_PROG + tl.arange(0, HEADS_PER_PROG)  # [P] index into q|k heads
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs = tl.arange(0, HALF)
    c1 = tl.load(cos_ptr + pos * stride_cos + offs).to(tl.float32)[None, :]
    c2 = tl.load(cos_ptr + pos * stride_cos + HALF + offs).to(tl.float32)[None, :]
    s1 = tl.load(sin_ptr + pos * stride_cos + offs).to(tl.float32)[None, :]
    s2 = tl.load(sin_ptr + pos * stride_cos + HALF + offs).to(tl.float32)[None, :]
    live = heads < NUM_HEADS + KV_HEADS
    row = qkv_ptr + t * stride_qkv
    src = heads[:, None] * (2 * HALF) + offs[None, :]  # [P, HALF]
    x1 = tl.load(row + src, mask=live[:, None], other=0.0).to(tl.float32)
    x2 = tl.load(row + src + HALF, mask=live[:, None], other=0.0).to(tl.float32)
    dt = q_out_ptr.dtype.element_ty
    o1, o2 = rope_halves(x1, x2, c1, c2, s1, s2, dt)
    is_q = (heads < NUM_HEADS)[:, None]
    q_dst = q_out_ptr + t * stride_qo_t + heads[:, None] * (2 * HALF) + offs[None, :]
    tl.store(q_dst, o1, mask=is_q)
    tl.store(q_dst + HALF, o2, mask=is_q)
    kh = heads - NUM_HEADS
    is_k = ((kh >= 0) & live)[:, None]
    kh = tl.where(kh >= 0, kh, 0)
    k_dst = k_out_ptr + t * stride_ko_t + kh[:, None] * (2 * HALF) + offs[None, :]
    tl.store(k_dst, o1, mask=is_k)
    tl.store(k_dst + HALF, o2, mask=is_k)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    cache_off = slot * stride_cache_slot + kh[:, None].to(tl.int64) * stride_cache_head + offs[None, :]
    tl.store(k_cache_ptr + cache_off, o1, mask=is_k)
    tl.store(k_cache_ptr + cache_off + HALF, o2, mask=is_k)
    v_src = row + (NUM_HEADS + KV_HEADS + kh[:, None]) * (2 * HALF) + offs[None, :]
    tl.store(v_cache_ptr + cache_off, tl.load(v_src, mask=is_k, other=0.0), mask=is_k)
    tl.store(v_cache_ptr + cache_off + HALF, tl.load(v_src + HALF, mask=is_k, other=0.0), mask=is_k)


ROPE_HEADS_PER_PROG = 8


def rope_kv_write(
    qkv: torch.Tensor,  # [T, (H + 2·KV)·d]
    cos: torch.Tensor,  # [max_positions, d]
    sin: torch.Tensor,
    positions: torch.Tensor,  # [T]
    slots: torch.Tensor,  # [T] block·block_size + offset
    k_cache: torch.Tensor,  # [blocks, block_size, KV, d]
    v_cache: torch.Tensor,
    num_heads: int,
    kv_heads: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rotates q and k, writes k and v into the pool at `slots`; returns (q [T,H,d], k [T,KV,d], v [T,KV,d] view)."""
    tokens = qkv.shape[0]
    d = k_cache.shape[-1]
    assert qkv.stride(1) == 1 and cos.is_contiguous() and sin.is_contiguous()
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1 and k_cache.stride(0) == k_cache.shape[1] * k_cache.stride(1)
    q = torch.empty((tokens, num_heads, d), dtype=qkv.dtype, device=qkv.device)
    k = torch.empty((tokens, kv_heads, d), dtype=qkv.dtype, device=qkv.device)
    if tokens:
        _rope_kv_write_kernel[(tokens, triton.cdiv(num_heads + kv_heads, ROPE_HEADS_PER_PROG))](
            qkv, cos, sin, positions, slots,
            q, k, k_cache, v_cache,
            qkv.stride(0), cos.stride(0), q.stride(0), k.stride(0), k_cache.stride(1), k_cache.stride(2),
            NUM_HEADS=num_heads, KV_HEADS=kv_heads, HALF=d // 2, HEADS_PER_PROG=ROPE_HEADS_PER_PROG, num_warps=4,
        )
    v = qkv[:, (num_heads + kv_heads) * d :].view(tokens, kv_heads, d)
    return q, k, v


@triton.jit
def _silu_mul_kernel(x_ptr, out_ptr, stride_x, stride_o, n_cols, BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < n_cols
    g = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(x_ptr + row * stride_x + n_cols + cols, mask=mask, other=0.0).to(tl.float32)
    dt = out_ptr.dtype.element_ty
    s = (g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32)
    tl.store(out_ptr + row * stride_o + cols, (s * u).to(dt), mask=mask)


SILU_BLOCK = 1024


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    """gate_up: [T, 2·inter] (gate | up) -> silu(gate)·up: [T, inter]."""
    rows, two_inter = gate_up.shape
    inter = two_inter // 2
    assert gate_up.stride(1) == 1
    out = torch.empty((rows, inter), dtype=gate_up.dtype, device=gate_up.device)
    if rows:
        _silu_mul_kernel[(rows, triton.cdiv(inter, SILU_BLOCK))](gate_up, out, gate_up.stride(0), out.stride(0), inter, BLOCK=SILU_BLOCK, num_warps=4)
    return out
