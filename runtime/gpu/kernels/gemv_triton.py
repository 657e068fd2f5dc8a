"""Weight-streaming GEMV for decode steps of at most 4 rows, with the neighbouring elementwise work folded in.

At batch 1 a 7B decode step is bound by reading the weights once (13.5 GB), yet the cuBLAS path
adds a split-K reduce kernel to two of the four products, and every layer still runs add+RMSNorm
twice and SiLU·mul once as separate kernels (each a few µs plus its gap inside the CUDA graph).
Here a layer is four products that each stream their weight once:

- QKV and gate/up read the raw residual and apply RMSNorm on the fly: the input tile is multiplied
  by the norm weight before the product and the accumulated sum of squares of the same tile gives
  the row scale, applied to the output (y = rstd · W(g ⊙ x), the same function as W(g ⊙ rstd·x));
  no pre-pass and no extra read of the input;
- QKV (given `RopeKV`) works one head per program and finishes like `fused_ops.rope_kv_write`:
  q and k rotated in the output, k and v written into the pool at each row's slot;
- down computes SiLU(gate)·up from the gate/up output as it loads it;
- O and down add their product into the residual in the epilogue (`residual += x·Wᵀ`: each output
  feature has one owner, so the in-place add has no race).

The product itself runs on the tensor cores with the operands swapped: a tile of BLOCK_N weight
rows times the input transposed and padded to 16 columns (rows past M are masked, so they cost no
memory traffic), `tl.dot` with the weight tiles software-pipelined NUM_STAGES deep. Products with
few output tiles (O, down: 4,096 features) split K over SPLIT_K programs; each writes an fp32
partial and the last to arrive at the tile's counter sums them in a fixed order and runs the
epilogue, so no second kernel runs and the result is deterministic (`runtime.gpu.kernels.split_scratch`).

Numerics: fp32 accumulation; in bf16 the normalised input is rounded once (g ⊙ x) instead of twice
(rstd·x, then ·g) as in transformers, so results agree to bf16 rounding; in fp32 the products run
in IEEE fp32 (no TF32) and agree to reassociation.

Whether a model uses this path, and with which tiles, is decided by timing it against cuBLAS on
the model's own weights: `runtime.gpu.gemv_plan`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from runtime.gpu.kernels.fused_ops import rope_halves
from runtime.gpu.kernels.split_scratch import arrival_counters, split_partials

MAX_ROWS = 4  # decode batches this path serves; larger batches keep cuBLAS
PAD_ROWS = 16  # the input is padded to the tensor cores' smallest tile width


@triton.jit
def _gemv_kernel(
    x_ptr, w_ptr, norm_ptr, out_ptr, part_ptr, count_ptr,
    cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr, stride_cos, stride_cache_slot, stride_cache_head,
    M, N, K, stride_x, stride_w, stride_out, eps, k_tiles_per_split,
    NORM: tl.constexpr, SILU: tl.constexpr, ADD_TO_OUT: tl.constexpr, SPLIT_K: tl.constexpr,
    ROPE: tl.constexpr, NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr,
    BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_M: tl.constexpr,
    EVEN_N: tl.constexpr, EVEN_K: tl.constexpr, NUM_STAGES: tl.constexpr, DOT_PRECISION: tl.constexpr,
):
    pid_n = tl.program_id(0)
    pid_k = tl.program_id(1)
    dt = w_ptr.dtype.element_ty
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    n_mask = offs_n < N
    m_mask = offs_m < M
    w_rows = w_ptr + offs_n[:, None].to(tl.int64) * stride_w  # [BN, 1]
    x_cols = x_ptr + offs_m[None, :].to(tl.int64) * stride_x  # [1, BM]: the input, transposed
    acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
    ss = tl.zeros([BLOCK_M], dtype=tl.float32)
    if NORM and SPLIT_K > 1:  # the row scale needs the whole row; this program streams only part of K
        for k0 in range(0, K, BLOCK_K):
            offs_k = k0 + tl.arange(0, BLOCK_K)
            xf = tl.load(x_cols + offs_k[:, None], mask=m_mask[None, :] & (offs_k < K)[:, None], other=0.0).to(tl.float32)
            ss += tl.sum(xf * xf, axis=0)
    k_start = pid_k * k_tiles_per_split * BLOCK_K
    k_stop = tl.minimum(k_start + k_tiles_per_split * BLOCK_K, K)  # the last split may be shorter
    for k0 in tl.range(k_start, k_stop, BLOCK_K, num_stages=NUM_STAGES):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        k_in = offs_k < K
        if EVEN_N and EVEN_K:
            w = tl.load(w_rows + offs_k[None, :])
        else:
            w = tl.load(w_rows + offs_k[None, :], mask=n_mask[:, None] & k_in[None, :], other=0.0)  # [BN, BK]
        x_mask = m_mask[None, :] & k_in[:, None]
        if SILU:  # the input holds gate | up, each K wide
            g = tl.load(x_cols + offs_k[:, None], mask=x_mask, other=0.0).to(tl.float32)
            u = tl.load(x_cols + K + offs_k[:, None], mask=x_mask, other=0.0).to(tl.float32)
            xt = ((g / (1.0 + tl.exp(-g))).to(dt).to(tl.float32) * u).to(dt)  # SiLU rounded before ·up, as torch
        else:
            xt = tl.load(x_cols + offs_k[:, None], mask=x_mask, other=0.0)  # [BK, BM]
            if NORM:
                xf = xt.to(tl.float32)
                if SPLIT_K == 1:
                    ss += tl.sum(xf * xf, axis=0)
                nw = tl.load(norm_ptr + offs_k, mask=k_in, other=0.0).to(tl.float32)
                xt = (xf * nw[:, None]).to(dt)
        acc = tl.dot(w, xt, acc, input_precision=DOT_PRECISION)
    out_mask = n_mask[:, None] & m_mask[None, :]
    if SPLIT_K > 1:
        # publish this program's partial; the last of the tile's SPLIT_K programs reduces them
        part_offs = offs_m[None, :] * N + offs_n[:, None]  # [BN, BM] within one split's [BM, N] slab
        tl.store(part_ptr + pid_k * BLOCK_M * N + part_offs, acc, mask=out_mask)
        tl.debug_barrier()  # every thread's partial is written before the arrival is counted
        arrived = tl.atomic_add(count_ptr + pid_n, 1, sem="acq_rel", scope="gpu")
        if arrived == SPLIT_K - 1:
            tl.debug_barrier()
            acc = tl.zeros([BLOCK_N, BLOCK_M], dtype=tl.float32)
            for s in range(SPLIT_K):  # fixed order: deterministic
                acc += tl.load(part_ptr + s * BLOCK_M * N + part_offs, mask=out_mask, other=0.0, cache_modifier=".cg")
            tl.store(count_ptr + pid_n, 0)  # ready for the next launch (and CUDA-graph replay)
            _gemv_epilogue(acc, ss, out_ptr, offs_n, offs_m, m_mask, out_mask, stride_out, K, eps, NORM, ADD_TO_OUT,
                           pid_n, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr, stride_cos, stride_cache_slot, stride_cache_head,
                           ROPE, NUM_HEADS, KV_HEADS, BLOCK_N, BLOCK_M)
    else:
        _gemv_epilogue(acc, ss, out_ptr, offs_n, offs_m, m_mask, out_mask, stride_out, K, eps, NORM, ADD_TO_OUT,
                       pid_n, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr, stride_cos, stride_cache_slot, stride_cache_head,
                       ROPE, NUM_HEADS, KV_HEADS, BLOCK_N, BLOCK_M)


@triton.jit
def _gemv_epilogue(
    acc, ss, out_ptr, offs_n, offs_m, m_mask, out_mask, stride_out, K, eps, NORM: tl.constexpr, ADD_TO_OUT: tl.constexpr,
    head, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr, stride_cos, stride_cache_slot, stride_cache_head,
    ROPE: tl.constexpr, NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """acc: [BN, BM] fp32 = W·xᵀ. Applies the RMSNorm row scale, rounds, adds into out if asked;
    with ROPE (the QKV product, one head per program) rotates q and k and writes k, v to the cache."""
    dt = out_ptr.dtype.element_ty
    if NORM:
        acc = acc * tl.rsqrt(ss / K + eps)[None, :]
    if ROPE:
        _rope_kv_epilogue(acc.to(dt), out_ptr, offs_m, m_mask, stride_out, head, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr,
                          stride_cos, stride_cache_slot, stride_cache_head, NUM_HEADS, KV_HEADS, BLOCK_N, BLOCK_M)
    else:
        y = acc.to(dt)
        out = out_ptr + offs_m[None, :].to(tl.int64) * stride_out + offs_n[:, None]
        if ADD_TO_OUT:  # the product is rounded before the residual add, as in `residual + x·Wᵀ`
            y = (tl.load(out, mask=out_mask, other=0.0).to(tl.float32) + y.to(tl.float32)).to(dt)
        tl.store(out, y, mask=out_mask)


@triton.jit
def _rope_kv_epilogue(
    y, out_ptr, offs_m, m_mask, stride_out, head, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_cache_ptr, v_cache_ptr,
    stride_cos, stride_cache_slot, stride_cache_head,
    NUM_HEADS: tl.constexpr, KV_HEADS: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_M: tl.constexpr,
):
    """y: [HEAD_DIM, BM], one head of the rounded q|k|v product for each row. Same arithmetic as
    `runtime.gpu.kernels.fused_ops.rope_kv_write`: q and k become y·cos + rotate_half(y)·sin (each product
    rounded) in the output; k and v are also written to the pool at each row's slot."""
    dt = out_ptr.dtype.element_ty
    HALF: tl.constexpr = HEAD_DIM // 2
    offs_h = tl.arange(0, HALF)
    mask = m_mask[None, :]
    y1, y2 = tl.split(tl.permute(tl.reshape(y.to(tl.float32), [2, HALF, BLOCK_M]), [1, 2, 0]))  # [HALF, BM] each
    if head < NUM_HEADS + KV_HEADS:  # q or k: rotate
        pos = tl.load(pos_ptr + offs_m, mask=m_mask, other=0).to(tl.int64)
        cs = pos[None, :] * stride_cos + offs_h[:, None]
        c1 = tl.load(cos_ptr + cs).to(tl.float32)
        c2 = tl.load(cos_ptr + cs + HALF).to(tl.float32)
        s1 = tl.load(sin_ptr + cs).to(tl.float32)
        s2 = tl.load(sin_ptr + cs + HALF).to(tl.float32)
        o1, o2 = rope_halves(y1, y2, c1, c2, s1, s2, dt)
    else:
        o1 = y1.to(dt)
        o2 = y2.to(dt)
    out = out_ptr + offs_m[None, :].to(tl.int64) * stride_out + head * HEAD_DIM + offs_h[:, None]
    tl.store(out, o1, mask=mask)
    tl.store(out + HALF, o2, mask=mask)
    if head >= NUM_HEADS:  # k or v: into the pool
        slot = tl.load(slot_ptr + offs_m, mask=m_mask, other=0).to(tl.int64)
        is_v = head >= NUM_HEADS + KV_HEADS
        kv_head = head - NUM_HEADS - KV_HEADS if is_v else head - NUM_HEADS
        cache_off = slot[None, :] * stride_cache_slot + kv_head * stride_cache_head + offs_h[:, None]
        if is_v:
            tl.store(v_cache_ptr + cache_off, o1, mask=mask)
            tl.store(v_cache_ptr + cache_off + HALF, o2, mask=mask)
        else:
            tl.store(k_cache_ptr + cache_off, o1, mask=mask)
            tl.store(k_cache_ptr + cache_off + HALF, o2, mask=mask)


@dataclass(frozen=True)
class GemvConfig:
    block_n: int
    block_k: int
    split_k: int = 1
    num_warps: int = 4
    num_stages: int = 4

    def __post_init__(self):
        for v in (self.block_n, self.block_k):
            if v < 16 or v & (v - 1):
                raise ValueError(f"GemvConfig blocks must be powers of two ≥ 16, got {self}")
        if self.split_k < 1 or self.num_stages < 1 or self.num_warps not in (1, 2, 4, 8, 16):
            raise ValueError(f"GemvConfig needs split_k ≥ 1, num_stages ≥ 1 and num_warps a power of two ≤ 16, got {self}")

    @property
    def label(self) -> str:
        return f"{self.block_n}x{self.block_k}s{self.split_k}w{self.num_warps}p{self.num_stages}"


# Small enough for fp32 operands too (shared memory: stages × BN × BK × 4 bytes).
DEFAULT_CONFIG = GemvConfig(64, 64, 1, 4, 3)
# What `GemvPlan.choose` tries per product, by shape: many output tiles stream without splitting;
# a few (the 4,096 features of O and down) split K so every SM gets work.
# (the leaders of `benchmarks/bench_gemv.py`'s sweep on an H200, docs/benchmarks-gpu.md)
WIDE_CANDIDATES = (GemvConfig(128, 128, 1, 8, 4), GemvConfig(128, 128, 1, 8, 3), GemvConfig(128, 128, 1, 8, 6), GemvConfig(128, 64, 1, 8, 8), GemvConfig(64, 128, 1, 8, 3))
NARROW_CANDIDATES = (GemvConfig(64, 128, 4, 4, 3), GemvConfig(128, 128, 4, 8, 4), GemvConfig(64, 64, 4, 4, 6), GemvConfig(128, 64, 4, 8, 6))
CANDIDATES = WIDE_CANDIDATES + NARROW_CANDIDATES


@dataclass(frozen=True)
class RopeKV:
    """What the QKV product needs to finish like `runtime.gpu.kernels.fused_ops.rope_kv_write`: the RoPE tables
    [max_positions, d], each row's position and pool slot, and the layer's K/V cache
    [blocks, block_size, kv_heads, d] (slot = block·block_size + offset)."""

    cos: torch.Tensor
    sin: torch.Tensor
    positions: torch.Tensor
    slots: torch.Tensor
    k_cache: torch.Tensor
    v_cache: torch.Tensor
    num_heads: int
    kv_heads: int

    @property
    def head_dim(self) -> int:
        return self.k_cache.shape[-1]

    def __post_init__(self):
        kc, vc = self.k_cache, self.v_cache
        if kc.stride() != vc.stride() or kc.stride(3) != 1 or kc.stride(0) != kc.shape[1] * kc.stride(1):
            raise ValueError("RopeKV caches must share strides with unit last stride and contiguous blocks")
        if not (self.cos.is_contiguous() and self.sin.is_contiguous()):
            raise ValueError("RopeKV cos/sin tables must be contiguous")


def gemv(
    x: torch.Tensor,  # [M, K] (or [M, 2K] gate|up when silu)
    weight: torch.Tensor,  # [N, K]
    *,
    norm_weight: torch.Tensor | None = None,
    eps: float = 1e-5,
    silu: bool = False,
    add_to: torch.Tensor | None = None,  # [M, N]: `add_to += result` in place, returned
    config: GemvConfig = DEFAULT_CONFIG,
    rope: "RopeKV | None" = None,
) -> torch.Tensor:
    """y = f(x)·Wᵀ for M ≤ 4 rows; f = RMSNorm·norm_weight, SiLU(gate)·up, or identity. With `rope`
    (the fused QKV product) q and k come out rotated and k, v are also written to the pool; the
    tile is then one head wide whatever `config.block_n` says."""
    m = x.shape[0]
    n, k = weight.shape
    if rope is not None:
        if add_to is not None or silu or n != (rope.num_heads + 2 * rope.kv_heads) * rope.head_dim:
            raise ValueError(f"gemv rope needs the plain q|k|v product ({(rope.num_heads + 2 * rope.kv_heads) * rope.head_dim} features), got weight {tuple(weight.shape)}")
        config = GemvConfig(rope.head_dim, config.block_k, config.split_k, config.num_warps, config.num_stages)
    if m > MAX_ROWS or x.stride(1) != 1 or weight.stride(1) != 1:
        raise ValueError(f"gemv takes ≤ {MAX_ROWS} rows with unit last strides, got x {tuple(x.shape)} stride {x.stride()}, weight stride {weight.stride()}")
    if x.shape[1] != (2 * k if silu else k) or (silu and norm_weight is not None):
        raise ValueError(f"gemv input width {x.shape[1]} does not fit weight {tuple(weight.shape)} (silu={silu}, norm={norm_weight is not None})")
    out = add_to if add_to is not None else torch.empty((m, n), dtype=weight.dtype, device=weight.device)
    if out.shape != (m, n) or out.stride(1) != 1:
        raise ValueError(f"gemv output must be [{m}, {n}] with unit last stride, got {tuple(out.shape)}")
    if not m:
        return out
    k_tiles = triton.cdiv(k, config.block_k)
    k_tiles_per_split = triton.cdiv(k_tiles, min(config.split_k, k_tiles))
    split = triton.cdiv(k_tiles, k_tiles_per_split)  # no empty split; the last may be shorter
    tiles_n = triton.cdiv(n, config.block_n)
    parts = counts = out  # (unused by an unsplit product)
    if split > 1:
        parts, counts = split_partials(weight.device, split * PAD_ROWS * n), arrival_counters(weight.device, tiles_n)
    if rope is None:  # the RoPE arguments are unused: any tensor of the right kind stands in
        rope_args = (weight, weight, out, out, weight, weight, 0, 0, 0)
        heads = (1, 1)
    else:
        rope_args = (rope.cos, rope.sin, rope.positions, rope.slots, rope.k_cache, rope.v_cache,
                     rope.cos.stride(0), rope.k_cache.stride(1), rope.k_cache.stride(2))
        heads = (rope.num_heads, rope.kv_heads)
    _gemv_kernel[(tiles_n, split)](
        x, weight, weight if norm_weight is None else norm_weight, out, parts, counts, *rope_args,
        m, n, k, x.stride(0), weight.stride(0), out.stride(0), eps, k_tiles_per_split,
        NORM=norm_weight is not None, SILU=silu, ADD_TO_OUT=add_to is not None, SPLIT_K=split,
        ROPE=rope is not None, NUM_HEADS=heads[0], KV_HEADS=heads[1],
        BLOCK_N=config.block_n, BLOCK_K=config.block_k, BLOCK_M=PAD_ROWS,
        EVEN_N=n % config.block_n == 0, EVEN_K=k % config.block_k == 0, NUM_STAGES=config.num_stages,
        DOT_PRECISION="ieee" if weight.dtype == torch.float32 else "tf32",
        num_warps=config.num_warps, num_stages=config.num_stages,
    )
    return out
