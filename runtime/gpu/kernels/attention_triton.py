"""The Triton paged decode kernel (CUDA only; imported lazily by `runtime.gpu.attention`).

One program per (sequence, query head) walks the sequence's pages TILE_TOKENS at a time with an
online softmax in fp32 (FlashAttention's recurrence), so the KV read streams once from HBM. The
kernel reads the block table itself, so the pool never needs a contiguous copy, and its loop
bound comes from `context_lens`, so one CUDA graph serves every context length.

At small batch (few sequence × head programs) the context is split over programs in partitions
of PART_TOKENS (flash-decoding): each writes its partial max, sum and weighted values and counts
its arrival (`runtime.gpu.kernels.split_scratch`); the last partition of a (sequence, head) to arrive
combines them in a fixed order, so no second kernel runs.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.gpu.kernels.split_scratch import arrival_counters

# tuned on the GPU in the kernel check (docs/benchmarks-gpu.md)
TILE_TOKENS = 64
NUM_WARPS = 2
NUM_STAGES = 2


@triton.jit
def _attend_tile(
    q, k_ptr, v_ptr, table_row_ptr, start, stop, kv_head, offs_d,
    stride_cache_block, stride_cache_tok, stride_cache_head,
    m_i, l_i, acc,
    BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr,
):
    """One tile of TILE cached tokens [start, min(start + TILE, stop)) folded into the online softmax
    state (m_i: running max, l_i: running sum, acc: [HEAD_DIM] weighted values), read through the
    sequence's block table row."""
    offs_t = start + tl.arange(0, TILE)
    valid = offs_t < stop
    block = tl.load(table_row_ptr + offs_t // BLOCK_SIZE, mask=valid, other=0)
    row = block.to(tl.int64) * stride_cache_block + (offs_t % BLOCK_SIZE) * stride_cache_tok + kv_head * stride_cache_head
    ptrs = row[:, None] + offs_d[None, :]
    k = tl.load(k_ptr + ptrs, mask=valid[:, None], other=0.0).to(tl.float32)  # [TILE, HEAD_DIM]
    s = tl.sum(k * q[None, :], axis=1)
    s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=0))
    alpha = tl.exp(m_i - m_new)
    p = tl.exp(s - m_new)
    v = tl.load(v_ptr + ptrs, mask=valid[:, None], other=0.0).to(tl.float32)  # (loading it beside k spills at 2 warps)
    l_i = l_i * alpha + tl.sum(p, axis=0)
    acc = acc * alpha + tl.sum(p[:, None] * v, axis=0)
    return m_new, l_i, acc


# Block-table widths and partition counts vary from step to step in eager (mixed) steps; left to
# Triton's specialization (value 1, divisible by 16) each new kind of value would compile a new
# variant in the middle of a run (0.25–0.6 s on an H200), after the warm-up has compiled the others.
@triton.jit(do_not_specialize=["stride_table_b"])
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
        m_i, l_i, acc = _attend_tile(
            q, k_ptr, v_ptr, table_ptr + b * stride_table_b, start, ctx, kv_head, offs_d,
            stride_cache_block, stride_cache_tok, stride_cache_head, m_i, l_i, acc, BLOCK_SIZE, TILE,
        )
    out = acc / l_i
    tl.store(out_ptr + b * stride_o_b + h * stride_o_h + offs_d, out.to(out_ptr.dtype.element_ty))


@triton.jit(do_not_specialize=["stride_table_b", "stride_p_b", "stride_p_h"])
def _paged_decode_split_kernel(
    q_ptr, k_ptr, v_ptr, table_ptr, lens_ptr, part_m_ptr, part_l_ptr, part_acc_ptr, count_ptr, out_ptr,
    scale,
    stride_q_b, stride_q_h,
    stride_table_b,
    stride_cache_block, stride_cache_tok, stride_cache_head,
    stride_p_b, stride_p_h, stride_o_b, stride_o_h,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr, TILE: tl.constexpr, PART: tl.constexpr,
    P_BLOCK: tl.constexpr,
):
    """One program per (sequence, head, context partition of PART tokens): partial softmax state;
    the last partition of its (sequence, head) to finish combines all of them into the output."""
    b = tl.program_id(0)
    h = tl.program_id(1)
    p = tl.program_id(2)
    ctx = tl.load(lens_ptr + b)
    part_start = p * PART
    if part_start < ctx:
        kv_head = h // GROUP
        offs_d = tl.arange(0, HEAD_DIM)
        q = tl.load(q_ptr + b * stride_q_b + h * stride_q_h + offs_d).to(tl.float32) * scale
        m_i = tl.max(tl.full([TILE], float("-inf"), tl.float32), axis=0)
        l_i = tl.sum(tl.zeros([TILE], tl.float32), axis=0)
        acc = tl.zeros([HEAD_DIM], tl.float32)
        part_stop = tl.minimum(part_start + PART, ctx)
        for start in range(part_start, part_stop, TILE):
            m_i, l_i, acc = _attend_tile(
                q, k_ptr, v_ptr, table_ptr + b * stride_table_b, start, part_stop, kv_head, offs_d,
                stride_cache_block, stride_cache_tok, stride_cache_head, m_i, l_i, acc, BLOCK_SIZE, TILE,
            )
        base = b * stride_p_b + h * stride_p_h
        tl.store(part_m_ptr + base + p, m_i)
        tl.store(part_l_ptr + base + p, l_i)
        tl.store(part_acc_ptr + (base + p) * HEAD_DIM + offs_d, acc)
        tl.debug_barrier()  # every thread's partial is written before the arrival is counted
        num_parts = (ctx + PART - 1) // PART
        counter = count_ptr + b * tl.num_programs(1) + h
        if tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu") == num_parts - 1:
            tl.debug_barrier()
            out = _combine_parts(part_m_ptr, part_l_ptr, part_acc_ptr, base, num_parts, offs_d, HEAD_DIM, P_BLOCK)
            tl.store(counter, 0)  # ready for the next launch and every CUDA-graph replay
            tl.store(out_ptr + b * stride_o_b + h * stride_o_h + offs_d, out.to(out_ptr.dtype.element_ty))


@triton.jit
def _combine_parts(part_m_ptr, part_l_ptr, part_acc_ptr, base, num_parts, offs_d, HEAD_DIM: tl.constexpr, P_BLOCK: tl.constexpr):
    """out = Σ e^(m_p − m) acc_p / Σ e^(m_p − m) l_p over the partitions of one (sequence, head),
    read past L1 (`.cg`): other programs wrote them."""
    m_run = tl.max(tl.full([P_BLOCK], float("-inf"), tl.float32), axis=0)
    l_run = tl.sum(tl.zeros([P_BLOCK], tl.float32), axis=0)
    acc = tl.zeros([HEAD_DIM], tl.float32)
    for start in range(0, num_parts, P_BLOCK):
        offs_p = start + tl.arange(0, P_BLOCK)
        valid = offs_p < num_parts
        m_p = tl.load(part_m_ptr + base + offs_p, mask=valid, other=float("-inf"), cache_modifier=".cg")
        l_p = tl.load(part_l_ptr + base + offs_p, mask=valid, other=0.0, cache_modifier=".cg")
        a_p = tl.load(part_acc_ptr + (base + offs_p)[:, None] * HEAD_DIM + offs_d[None, :], mask=valid[:, None], other=0.0, cache_modifier=".cg")
        m_new = tl.maximum(m_run, tl.max(m_p, axis=0))
        w = tl.where(valid, tl.exp(m_p - m_new), 0.0)
        alpha = tl.exp(m_run - m_new)
        l_run = l_run * alpha + tl.sum(w * l_p, axis=0)
        acc = acc * alpha + tl.sum(w[:, None] * a_p, axis=0)
        m_run = m_new
    return acc / l_run


# Split the context over programs while (sequence × head) programs alone would leave the GPU's
# SMs mostly idle (batch 1 × 32 heads = 32 programs on 132 SMs, each walking the whole context).
SPLIT_BELOW_PROGRAMS = 1024
PART_TOKENS = 64
SPLIT_NUM_WARPS = NUM_WARPS


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
    split: bool | None = None,
    part_tokens: int = PART_TOKENS,
    split_num_warps: int = SPLIT_NUM_WARPS,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Returns `out` ([B, heads, d], written in place when given: a slice of a step's attention output)."""
    batch, num_heads, head_dim = q.shape
    kv_heads = k_cache.shape[2]
    if out is None:
        out = torch.empty_like(q)
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1 and q.stride(2) == 1
    if split is None:
        split = batch * num_heads < SPLIT_BELOW_PROGRAMS
    if split:
        # the grid covers the table's capacity (fixed per CUDA graph); partitions past a sequence's
        # context exit at once, so one graph serves every context length
        max_parts = triton.cdiv(block_tables.shape[1] * k_cache.shape[1], part_tokens)
        part_m = torch.empty((batch, num_heads, max_parts), dtype=torch.float32, device=q.device)
        part_l = torch.empty_like(part_m)
        part_acc = torch.empty((batch, num_heads, max_parts, head_dim), dtype=torch.float32, device=q.device)
        counts = arrival_counters(q.device, batch * num_heads)
        _paged_decode_split_kernel[(batch, num_heads, max_parts)](
            q, k_cache, v_cache, block_tables, context_lens, part_m, part_l, part_acc, counts, out,
            scale,
            q.stride(0), q.stride(1),
            block_tables.stride(0),
            k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            part_m.stride(0), part_m.stride(1), out.stride(0), out.stride(1),
            GROUP=num_heads // kv_heads, HEAD_DIM=head_dim, BLOCK_SIZE=k_cache.shape[1], TILE=min(tile_tokens, part_tokens), PART=part_tokens,
            P_BLOCK=16, num_warps=split_num_warps, num_stages=num_stages,
        )
        return out
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
