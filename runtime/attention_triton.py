"""The Triton paged decode kernel (CUDA only; imported lazily by `runtime.attention`).

One program per (sequence, query head) walks the sequence's pages TILE_TOKENS at a time with an
online softmax in fp32 (FlashAttention's recurrence), so the KV read streams once from HBM. The
kernel reads the block table itself, so the pool never needs a contiguous copy, and its loop
bound comes from `context_lens`, so one CUDA graph serves every context length.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

# tuned on the GPU in the kernel check (docs/benchmarks-gpu.md)
TILE_TOKENS = 64
NUM_WARPS = 2
NUM_STAGES = 2


@triton.jit
def _paged_decode_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, out_ptr,
    scale,
    stride_q_b, stride_q_h,
    stride_table_b,
    stride_cache_block, stride_cache_tok, stride_cache_head,
    stride_o_b, stride_o_h,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr,
):
    b = tl.program_id(0)
    h = tl.program_id(1)
    kv_head = h // GROUP
    ctx = tl.load(lens_ptr + b)
    offs_d = tl.arange(0, HEAD_DIM)
    q = tl.load(q_ptr + b * stride_q_b + h * stride_q_h + offs_d).to(tl.float32) * scale
    m_i = tl.max(tl.full([TILE], float("-inf"), tl.float32), axis=0)
    l_i = tl.sum(tl.zeros([TILE], tl.float32), axis=0)
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for start in range(0, ctx, TILE):
        offs_t = start + tl.arange(0, TILE)
        valid = offs_t < ctx
        block = tl.load(table_ptr + b * stride_table_b + offs_t // BLOCK_SIZE, mask=valid, other=0)
        row = block.to(tl.int64) * stride_cache_block + (offs_t % BLOCK_SIZE) * stride_cache_tok + kv_head * stride_cache_head
        ptrs = row[:, None] + offs_d[None, :]
        k = tl.load(k_ptr + ptrs, mask=valid[:, None], other=0.0).to(tl.float32)  # [TILE, HEAD_DIM]
        s = tl.sum(k * q[None, :], axis=1)
        s = tl.where(valid, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, axis=0))
        alpha = tl.exp(m_i - m_new)
        p = tl.exp(s - m_new)
        v = tl.load(v_ptr + ptrs, mask=valid[:, None], other=0.0).to(tl.float32)
        l_i = l_i * alpha + tl.sum(p, axis=0)
        acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
        m_i = m_new
    out = acc / l_i
    tl.store(out_ptr + b * stride_o_b + h * stride_o_h + offs_d, out.to(out_ptr.dtype.element_ty))


def paged_decode_triton(
    q: torch.Tensor,  # [B, heads, d]
    k_cache: torch.Tensor,  # [blocks, block_size, kv_heads, d]
    v_cache: torch.Tensor,
    block_tables: torch.Tensor,  # [B, max_blocks] int32
    context_lens: torch.Tensor,  # [B] int32, ≥ 1
    scale: float,
    *,
    tile_tokens: int = TILE_TOKENS,
    num_warps: int = NUM_WARPS,
    num_stages: int = NUM_STAGES,
) -> torch.Tensor:
    batch, num_heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    out = torch.empty_like(q)
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1 and q.stride(2) == 1
    _paged_decode_kernel[(batch, num_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        scale,
        q.stride(0), q.stride(1),
        block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        out.stride(0), out.stride(1),
        GROUP=num_heads // kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=k_cache.shape[1], TILE=tile_tokens,
        num_warps=num_warps, num_stages=num_stages,
    )
    return out
