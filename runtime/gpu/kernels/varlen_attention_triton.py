"""Variable-length attention over the paged pool: every sequence of a step in one launch per layer.

A step holds sequences of different shapes (prefill chunks of any length with or without a cached
prefix, and decodes, which are chunks of one token). Each computes, for its `num_new` query rows
at absolute positions `context + i`, causal attention over its cached prefix (read in place from
the pool through its block-table row, no gather, no mask tensor) and over its own fresh keys
(read from this step's K/V rows, causally masked). An online softmax in fp32 (FlashAttention's
recurrence) walks the prefix and then the chunk BLOCK_N keys at a time, with `tl.dot` on the
tensor cores for QKᵀ and PV.

The work is cut into query tiles of BLOCK_M rows of one sequence; a tile map `[tiles, 2]`
(sequence index, first row of the tile within its chunk) and the tile count live in device
memory, and each program walks tiles `pid, pid + grid, ...` up to that count. So one launch (and
one CUDA graph) serves any mix of sequences whose tiles fit the map: the grid is a property of
the graph's bucket, the composition only of the buffers.

Before it each prefill sequence cost one SDPA call per layer, and a chunk with a prefix a
gather of the whole prefix plus a dense mask: host time grew with the number of prefill
sequences (about 1.9 ms per sequence per step on an H200 host; docs/benchmarks-gpu.md).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.gpu.attention import DECODE_BLOCK_M, PREFILL_BLOCK_M, PREFILL_TILES, SHORT_TILES  # noqa: F401

# a launch of another tile height (tests, sweeps) than the prefill's and the 16-row launch's
BLOCK_N = 64
NUM_WARPS = 4
NUM_STAGES = 2
_LOG2E = 1.4426950408889634


@triton.jit
def _softmax_tile(q, k, v, valid, m_i, l_i, acc, qk_scale, PRECISION: tl.constexpr, MASKED: tl.constexpr = True):
    """Fold one key tile (k, v: [BLOCK_N, HEAD_DIM]; valid: [BLOCK_M, BLOCK_N]) into the state;
    `MASKED` False: every key of the tile is visible to every query (`valid` is not read)."""
    s = tl.dot(q, tl.trans(k), input_precision=PRECISION) * qk_scale  # [M, N], log2 domain
    if MASKED:
        s = tl.where(valid, s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(s, axis=1))
    m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with nothing valid yet stays empty
    alpha = tl.exp2(m_i - m_safe)
    p = tl.exp2(s - m_safe[:, None])
    l_i = l_i * alpha + tl.sum(p, axis=1)
    acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PRECISION)
    return m_new, l_i, acc


# The block-table width varies from step to step (not specialized: no mid-run compiles). The row
# strides of q, k_new, v_new and out are the model's (H + 2·KV)·d or H·d, fixed for a run and
# multiples of 16: left to Triton's divisibility specialization, the row loads vectorize (16-byte
# loads, pipelined). Unspecialized they were element-wise: a causal 2,048-token prompt ran at a
# third of the rate (docs/bench-attention-ceiling-h200.json, `ours_row_strides_unspecialized`).
@triton.jit(do_not_specialize=["stride_table_s"])
def _varlen_paged_kernel(
    q_ptr, k_new_ptr, v_new_ptr, k_cache_ptr, v_cache_ptr, out_ptr,
    seq_ptr, table_ptr, tile_ptr, num_tiles_ptr,
    qk_scale,
    stride_q_t, stride_q_h,
    stride_kn_t, stride_kn_h, stride_vn_t, stride_vn_h,
    stride_o_t, stride_o_h,
    stride_table_s,
    stride_cache_block, stride_cache_tok, stride_cache_head,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr, SPLIT: tl.constexpr,
    HEADS_INNER: tl.constexpr = False, NUM_HEADS: tl.constexpr = 1,
):
    if HEADS_INNER:  # a 1-D grid, heads fastest: every head's first tile starts before any head's second
        flat = tl.program_id(0)
        h = flat % NUM_HEADS
        pid = flat // NUM_HEADS
        grid = tl.num_programs(0) // NUM_HEADS
    else:
        pid = tl.program_id(0)
        h = tl.program_id(1)
        grid = tl.num_programs(0)
    kv_head = h // GROUP
    num_tiles = tl.load(num_tiles_ptr)
    offs_m = tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    for t in range(pid, num_tiles, grid):
        s_idx = tl.load(tile_ptr + 2 * t)
        m0 = tl.load(tile_ptr + 2 * t + 1)
        row_start = tl.load(seq_ptr + 3 * s_idx)
        n_new = tl.load(seq_ptr + 3 * s_idx + 1)
        ctx = tl.load(seq_ptr + 3 * s_idx + 2)
        qi = m0 + offs_m  # query index within the chunk
        q_live = qi < n_new
        rows = (row_start + qi).to(tl.int64)
        q = tl.load(q_ptr + rows[:, None] * stride_q_t + h * stride_q_h + offs_d[None, :], mask=q_live[:, None], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        # the cached prefix: every key precedes every query of the chunk, only the length bounds it.
        # SPLIT: whole key tiles first without any mask, then the last partial one masked (same
        # arithmetic: a mask that is all true changes nothing)
        table_row = table_ptr + s_idx.to(tl.int64) * stride_table_s
        if SPLIT:
            ctx_full = (ctx // BLOCK_N) * BLOCK_N
            for start in range(0, ctx_full, BLOCK_N):
                kpos = start + offs_n
                block = tl.load(table_row + kpos // BLOCK_SIZE).to(tl.int64)
                addr = block * stride_cache_block + (kpos % BLOCK_SIZE) * stride_cache_tok + kv_head * stride_cache_head
                k = tl.load(k_cache_ptr + addr[:, None] + offs_d[None, :])
                v = tl.load(v_cache_ptr + addr[:, None] + offs_d[None, :])
                m_i, l_i, acc = _softmax_tile(q, k, v, q_live[:, None], m_i, l_i, acc, qk_scale, PRECISION, False)
        else:
            ctx_full = ctx * 0
        for start in range(ctx_full, ctx, BLOCK_N):
            kpos = start + offs_n
            k_live = kpos < ctx
            block = tl.load(table_row + kpos // BLOCK_SIZE, mask=k_live, other=0).to(tl.int64)
            addr = block * stride_cache_block + (kpos % BLOCK_SIZE) * stride_cache_tok + kv_head * stride_cache_head
            k = tl.load(k_cache_ptr + addr[:, None] + offs_d[None, :], mask=k_live[:, None], other=0.0)
            v = tl.load(v_cache_ptr + addr[:, None] + offs_d[None, :], mask=k_live[:, None], other=0.0)
            m_i, l_i, acc = _softmax_tile(q, k, v, q_live[:, None] & k_live[None, :], m_i, l_i, acc, qk_scale, PRECISION)
        # the chunk's own keys, causal: query i sees keys 0..i of the chunk. SPLIT: key tiles that end
        # before the tile's first query are visible to all its queries and skip the mask
        stop = tl.minimum(m0 + BLOCK_M, n_new)
        if SPLIT:
            diag = (m0 // BLOCK_N) * BLOCK_N
            for start in range(0, diag, BLOCK_N):
                krows = (row_start + start + offs_n).to(tl.int64)
                k = tl.load(k_new_ptr + krows[:, None] * stride_kn_t + kv_head * stride_kn_h + offs_d[None, :])
                v = tl.load(v_new_ptr + krows[:, None] * stride_vn_t + kv_head * stride_vn_h + offs_d[None, :])
                m_i, l_i, acc = _softmax_tile(q, k, v, q_live[:, None], m_i, l_i, acc, qk_scale, PRECISION, False)
        else:
            diag = m0 * 0
        for start in range(diag, stop, BLOCK_N):
            kj = start + offs_n
            k_live = kj < stop
            krows = (row_start + kj).to(tl.int64)
            k = tl.load(k_new_ptr + krows[:, None] * stride_kn_t + kv_head * stride_kn_h + offs_d[None, :], mask=k_live[:, None], other=0.0)
            v = tl.load(v_new_ptr + krows[:, None] * stride_vn_t + kv_head * stride_vn_h + offs_d[None, :], mask=k_live[:, None], other=0.0)
            valid = q_live[:, None] & k_live[None, :] & (kj[None, :] <= qi[:, None])
            m_i, l_i, acc = _softmax_tile(q, k, v, valid, m_i, l_i, acc, qk_scale, PRECISION)
        out = acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]
        tl.store(out_ptr + rows[:, None] * stride_o_t + h * stride_o_h + offs_d[None, :], out.to(out_ptr.dtype.element_ty), mask=q_live[:, None])


def varlen_paged_attention(
    q: torch.Tensor,  # [T, heads, d] rotated queries of the step's rows
    k_new: torch.Tensor,  # [T, kv_heads, d] this step's rotated keys (also already in the pool)
    v_new: torch.Tensor,  # [T, kv_heads, d]
    k_cache: torch.Tensor,  # [blocks, block_size, kv_heads, d]
    v_cache: torch.Tensor,
    out: torch.Tensor,  # [T, heads, d]: rows of the batch's sequences are written, others untouched
    seq_meta: torch.Tensor,  # [S, 3] int32: row_start, num_new, context_tokens
    block_tables: torch.Tensor,  # [S, width] int32 (only rows of sequences with a prefix are read)
    tile_map: torch.Tensor,  # [tiles, 2] int32: sequence index, first chunk row of the tile
    num_tiles: torch.Tensor,  # [1] int32: live tiles (entries past it are never read)
    scale: float,
    *,
    grid_programs: int,
    block_m: int,
    num_warps: int | None = None,
    num_stages: int | None = None,
    block_n: int | None = None,
    split: bool | None = None,
    heads_inner: bool | None = None,
) -> torch.Tensor:
    """Launch over `grid_programs` × heads programs. Tiling: the prefill launch's (`PREFILL_TILES`)
    when `block_m` is its height, the 16-row launch's (`SHORT_TILES`) when it is 16, else the
    module defaults; each argument given overrides it."""
    heads, d = q.shape[1], q.shape[2]
    kv_heads = k_cache.shape[2]
    assert k_cache.stride() == v_cache.stride() and k_cache.stride(3) == 1 and q.stride(2) == 1 and k_new.stride(2) == 1 and v_new.stride(2) == 1
    if grid_programs <= 0:
        return out
    precision = "ieee" if q.dtype == torch.float32 else "tf32"
    tiles = PREFILL_TILES if block_m == PREFILL_BLOCK_M else SHORT_TILES if block_m == DECODE_BLOCK_M else None
    warps, stages = (tiles.num_warps, tiles.num_stages) if tiles else (NUM_WARPS, NUM_STAGES)
    warps, stages = (num_warps or warps), (num_stages or stages)
    bn = block_n or (tiles.block_n if tiles else BLOCK_N)
    split = (tiles.split if tiles else False) if split is None else split
    heads_inner = (tiles.heads_inner if tiles else False) if heads_inner is None else heads_inner
    launch_grid = (grid_programs * heads,) if heads_inner else (grid_programs, heads)
    _varlen_paged_kernel[launch_grid](
        q, k_new, v_new, k_cache, v_cache, out,
        seq_meta, block_tables, tile_map, num_tiles,
        scale * _LOG2E,
        q.stride(0), q.stride(1),
        k_new.stride(0), k_new.stride(1), v_new.stride(0), v_new.stride(1),
        out.stride(0), out.stride(1),
        block_tables.stride(0),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
        GROUP=heads // kv_heads, HEAD_DIM=d, BLOCK_SIZE=k_cache.shape[1],
        BLOCK_M=block_m, BLOCK_N=bn, PRECISION=precision, SPLIT=split, HEADS_INNER=heads_inner, NUM_HEADS=heads,
        num_warps=warps, num_stages=stages,
    )
    return out
