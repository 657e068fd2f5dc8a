"""Attention over the paged KV pool: packed variable-length prefill and paged decode.

One forward serves a mixed batch (arXiv 2504.07347: mixing prefill chunks with decodes is what
makes the linear batch-time model hold). The token rows of a step are packed as
`[prefill chunk tokens of each prefill sequence..., one token per decode sequence]`.

- Prefill: each chunk attends causally to itself and to its request's cached prefix. On CUDA all
  prefill chunks of a step go through one variable-length kernel launch per layer
  (`runtime.gpu.kernels.varlen_attention_triton`: prefix read in place through the block table,
  the chunk's keys from this step's rows); its metadata is a `VarlenBatch` of device tensors.
  The torch reference (`prefill_attention`, the CPU path and the test oracle) runs one SDPA per
  chunk: with no prefix on the fresh K/V, with a prefix over prefix + chunk gathered from the pool
  (written first) under a bottom-right causal mask.
- Decode: one query row per sequence over its block table — a Triton kernel on CUDA (online
  softmax over pages, one program per (sequence, query head)), a torch reference on CPU.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

# cuDNN attention builds an execution plan per distinct shape (tens of ms); a run's chunks have
# ever-new lengths, so only the plan-free backends are allowed.
_PREFILL_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@dataclass(slots=True)
class PrefillSeq:
    """One prefill chunk inside the packed rows: rows [row_start, row_start + num_new_tokens)."""

    row_start: int
    num_new_tokens: int
    context_tokens: int  # cached prefix length before this chunk
    block_ids: torch.Tensor | None  # [blocks] on device; needed only when context_tokens > 0


@dataclass(frozen=True, slots=True)
class PrefillTiles:
    """How the variable-length kernel cuts a prefill launch: query-tile height, warps, pipeline
    stages, key-tile width, whether key tiles wholly before the query tile (and whole prefix tiles)
    skip the causal / length mask (`split`), and whether each sequence's tiles are queued longest
    first (`heavy_first`: a causal prompt's last tile walks every key tile; started first, it does
    not become the launch's tail), and whether the launch's programs run heads fastest
    (`heads_inner`: a 1-D grid in which every head's first tile is queued before any head's second,
    so heavy-first ordering holds across heads, not only within one)."""

    block_m: int = 64
    num_warps: int = 4
    num_stages: int = 2
    block_n: int = 64
    split: bool = False
    heavy_first: bool = False
    heads_inner: bool = False

    def spec(self) -> str:
        flags = (self.split, self.heavy_first, self.heads_inner)
        return f"{self.block_m},{self.num_warps},{self.num_stages},{self.block_n}," + ",".join(str(int(f)) for f in flags)


def parse_prefill_tiles(text: str, variable: str = "FLUIDSCHED_VARLEN_PREFILL") -> PrefillTiles:
    """`BLOCK_M,NUM_WARPS,NUM_STAGES[,BLOCK_N[,SPLIT[,HEAVY_FIRST[,HEADS_INNER]]]]`, e.g. 64,4,2 or 128,8,3,64,1,1,1."""
    fields = text.split(",")
    usage = (f"{variable} must be BLOCK_M,NUM_WARPS,NUM_STAGES[,BLOCK_N[,SPLIT 0|1[,HEAVY_FIRST 0|1[,HEADS_INNER 0|1]]]] "
             "(e.g. 64,4,2)")
    try:
        values = [int(x) for x in fields]
    except ValueError:
        raise ValueError(f"{usage}, got {text!r}") from None
    if not 3 <= len(values) <= 7:
        raise ValueError(f"{usage}, got {text!r}")
    bm, warps, stages = values[:3]
    bn = values[3] if len(values) > 3 else 64
    flags = values[4:] + [0] * (7 - max(len(values), 4))
    if bm < 16 or bm & (bm - 1) or bn < 16 or bn & (bn - 1) or warps not in (1, 2, 4, 8, 16) or stages < 1 or any(f not in (0, 1) for f in flags):
        raise ValueError(f"{variable}: BLOCK_M and BLOCK_N powers of two ≥ 16, warps 1-16, stages ≥ 1, "
                         f"SPLIT, HEAVY_FIRST and HEADS_INNER 0 or 1; got {text!r}")
    return PrefillTiles(bm, warps, stages, bn, *(bool(f) for f in flags))


# query-tile heights of the variable-length kernel: prefill chunks use tall tiles (each K/V tile is
# read once per BLOCK_M queries), decodes (one query row) short ones (the tensor-core minimum, 16
# rows). The prefill tiling can be set for a tuning sweep (benchmarks/bench_varlen.py) with
# FLUIDSCHED_VARLEN_PREFILL (see `parse_prefill_tiles`); read once, at import, because the graphs
# are captured with it. The shipped tiling: 64 × 64 tiles, 4 warps, 2 stages, whole key tiles
# unmasked, each prompt's tiles longest first, heads fastest; on an H200 it ran one causal
# 2,048-token prompt in 122.6 µs a layer against 163.9 µs for the plain 64,4,2 (kernel time, the
# launch hidden; docs/bench-varlen-h200.json).
SHIPPED_PREFILL_TILING = "64,4,2,64,1,1,1"
PREFILL_TILES = parse_prefill_tiles(os.environ.get("FLUIDSCHED_VARLEN_PREFILL", SHIPPED_PREFILL_TILING))
PREFILL_BLOCK_M, PREFILL_NUM_WARPS, PREFILL_NUM_STAGES = PREFILL_TILES.block_m, PREFILL_TILES.num_warps, PREFILL_TILES.num_stages
DECODE_BLOCK_M = 16
# the 16-row launch (decodes in graphed mixed steps, and short chunks): its tiling, set for a sweep
# with FLUIDSCHED_VARLEN_SHORT (same fields; BLOCK_M must be 16; heavy-first does not apply, its
# tile map is one tile per sequence)
SHIPPED_SHORT_TILING = "16,4,2,64,0,0,0"
SHORT_TILES = parse_prefill_tiles(os.environ.get("FLUIDSCHED_VARLEN_SHORT", SHIPPED_SHORT_TILING), "FLUIDSCHED_VARLEN_SHORT")
if SHORT_TILES.block_m != DECODE_BLOCK_M:
    raise ValueError(f"FLUIDSCHED_VARLEN_SHORT: BLOCK_M must be {DECODE_BLOCK_M}, got {SHORT_TILES.spec()}")
# graphed steps: prefill chunks of at most this many tokens go through the 16-row launch beside the
# decodes instead of 64-row tiles that would be a quarter full or less (a cohort of short prompts,
# a chunked prefill's small remainder). 0 turns it off; at most DECODE_BLOCK_M (one tile each).
def parse_short_chunk_tokens(text: str) -> int:
    """`FLUIDSCHED_SHORT_CHUNK_TOKENS`: a whole number 0..DECODE_BLOCK_M."""
    usage = f"FLUIDSCHED_SHORT_CHUNK_TOKENS must be a whole number 0..{DECODE_BLOCK_M} (one {DECODE_BLOCK_M}-row tile per chunk; 0 turns it off)"
    try:
        value = int(text.strip())
    except ValueError:
        raise ValueError(f"{usage}, got {text!r}") from None
    if not 0 <= value <= DECODE_BLOCK_M:
        raise ValueError(f"{usage}, got {text!r}")
    return value


SHORT_CHUNK_TOKENS = parse_short_chunk_tokens(os.environ.get("FLUIDSCHED_SHORT_CHUNK_TOKENS", str(DECODE_BLOCK_M)))


@dataclass(frozen=True, slots=True)
class VarlenBatch:
    """Device metadata of the sequences one variable-length attention launch serves (see the kernel)."""

    seq_meta: torch.Tensor  # [S, 3] int32: row_start, num_new, context_tokens
    block_tables: torch.Tensor  # [S, width] int32
    tile_map: torch.Tensor  # [tiles, 2] int32: sequence index, first chunk row of the tile
    num_tiles: torch.Tensor  # [1] int32
    grid_programs: int  # programs along the tile axis (the live tile count, or a graph bucket's capacity)
    block_m: int  # query rows per tile


def tile_map_rows(num_new: list[int], block_m: int, heavy_first: bool | None = None) -> list[tuple[int, int]]:
    """(sequence index, first chunk row) of every query tile of sequences with `num_new` rows each;
    `heavy_first` (default: the prefill tiling's) lists each sequence's tiles last row first."""
    if heavy_first is None:
        heavy_first = PREFILL_TILES.heavy_first and block_m == PREFILL_BLOCK_M
    if heavy_first:
        return [(s, m) for s, n in enumerate(num_new) for m in range(((n - 1) // block_m) * block_m, -1, -block_m)]
    return [(s, m) for s, n in enumerate(num_new) for m in range(0, n, block_m)]


def _aligned(size: int) -> int:
    """int32 elements rounded up to 16 bytes: Triton specialises on pointer alignment, and a region
    starting at a new alignment would compile another kernel variant in the middle of a run."""
    return -(-size // 4) * 4


def pack_varlen(seqs: list[tuple[int, int, int, list[int]]], block_m: int, device, *, heavy_first: bool | None = None) -> VarlenBatch:
    """One host→device copy of the metadata of `seqs` = [(row_start, num_new, context_tokens, block table)].

    Tables are padded to the longest table among sequences with a prefix (others are never read)."""
    import numpy as np

    n_seqs = len(seqs)
    tiles = tile_map_rows([n for _, n, _, _ in seqs], block_m, heavy_first)
    width = max((len(t) for _, _, ctx, t in seqs if ctx), default=1)
    at_tiles = _aligned(3 * n_seqs)
    at_count = at_tiles + _aligned(2 * len(tiles))
    at_tables = at_count + 4
    host = np.zeros(at_tables + n_seqs * width, dtype=np.int32)
    host[: 3 * n_seqs] = [x for r, n, c, _ in seqs for x in (r, n, c)]
    host[at_tiles : at_tiles + 2 * len(tiles)] = [x for tile in tiles for x in tile]
    host[at_count] = len(tiles)
    tables = host[at_tables:].reshape(n_seqs, width)
    for i, (_, _, ctx, t) in enumerate(seqs):
        if ctx:
            tables[i, : len(t)] = t
    dev = torch.from_numpy(host).to(device)
    return VarlenBatch(
        dev[: 3 * n_seqs].view(n_seqs, 3), dev[at_tables:].view(n_seqs, width),
        dev[at_tiles : at_tiles + 2 * len(tiles)].view(len(tiles), 2), dev[at_count : at_count + 1], len(tiles), block_m,
    )


def varlen_from_prefills(prefills: list[PrefillSeq], block_m: int, device) -> VarlenBatch:
    """The VarlenBatch of `PrefillSeq`s (callers that build steps by hand: warm-up, benchmarks, tests)."""
    seqs = [(p.row_start, p.num_new_tokens, p.context_tokens, p.block_ids.tolist() if p.context_tokens else []) for p in prefills]
    return pack_varlen(seqs, block_m, device)


def varlen_attention_reference(q, k_new, v_new, k_cache, v_cache, batch: VarlenBatch, scale: float, out: torch.Tensor) -> torch.Tensor:
    """Torch oracle of the variable-length kernel on the same metadata: `prefill_attention` per sequence."""
    meta = batch.seq_meta.tolist()
    for s, (row, n, ctx) in enumerate(meta):
        rows = slice(row, row + n)
        seq = PrefillSeq(row, n, ctx, batch.block_tables[s].long() if ctx else None)
        out[rows] = prefill_attention(q[rows], k_new[rows], v_new[rows], seq, k_cache, v_cache, scale)
    return out


def _expand_kv_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """x: [kv_heads, n, d] -> [num_heads, n, d] (GQA: each kv head serves a group of query heads)."""
    group = num_heads // x.shape[0]
    return x if group == 1 else x.repeat_interleave(group, dim=0)


def gather_tokens(cache: torch.Tensor, block_ids: torch.Tensor, num_tokens: int) -> torch.Tensor:
    """cache: [blocks, block_size, kv_heads, d]; returns the first `num_tokens` of a sequence: [n, kv_heads, d]."""
    pages = cache.index_select(0, block_ids)  # [nb, block_size, kv_heads, d]
    return pages.reshape(-1, cache.shape[2], cache.shape[3])[:num_tokens]


def prefill_attention(
    q: torch.Tensor, k_new: torch.Tensor, v_new: torch.Tensor, seq: PrefillSeq, k_cache: torch.Tensor, v_cache: torch.Tensor, scale: float
) -> torch.Tensor:
    """q: [n, heads, d]; k_new, v_new: [n, kv_heads, d] (this chunk). Returns [n, heads, d]."""
    n, num_heads, _ = q.shape
    if seq.context_tokens == 0:
        k, v = k_new, v_new
        mask, causal = None, True
    else:
        total = seq.context_tokens + n
        k = gather_tokens(k_cache, seq.block_ids, total)  # [total, kv_heads, d]
        v = gather_tokens(v_cache, seq.block_ids, total)
        rows = torch.arange(n, device=q.device)[:, None] + seq.context_tokens
        mask = torch.arange(total, device=q.device)[None, :] <= rows  # bottom-right causal
        causal = False
    qh = q.transpose(0, 1)  # [heads, n, d]
    kh = _expand_kv_heads(k.transpose(0, 1), num_heads)  # [heads, total, d]
    vh = _expand_kv_heads(v.transpose(0, 1), num_heads)
    with sdpa_kernel(_PREFILL_BACKENDS):
        out = F.scaled_dot_product_attention(qh[None], kh[None], vh[None], attn_mask=mask, is_causal=causal, scale=scale)
    return out[0].transpose(0, 1)  # [n, heads, d]


def paged_decode_reference(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float
) -> torch.Tensor:
    """Torch reference (CPU path and test oracle). q: [B, heads, d]; block_tables: [B, max_blocks];
    context_lens: [B] tokens to attend (including the current one, already written). Returns [B, heads, d]."""
    batch, num_heads, head_dim = q.shape
    block_size, kv_heads = k_cache.shape[1], k_cache.shape[2]
    max_tokens = block_tables.shape[1] * block_size
    k = k_cache[block_tables.long()].reshape(batch, max_tokens, kv_heads, head_dim)  # [B, T, kvh, d]
    v = v_cache[block_tables.long()].reshape(batch, max_tokens, kv_heads, head_dim)
    group = num_heads // kv_heads
    k = k.repeat_interleave(group, dim=2).float()  # [B, T, heads, d]
    v = v.repeat_interleave(group, dim=2).float()
    scores = torch.einsum("bhd,bthd->bht", q.float(), k) * scale
    valid = torch.arange(max_tokens, device=q.device)[None, :] < context_lens[:, None].long()  # [B, T]
    scores = scores.masked_fill(~valid[:, None, :], float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("bht,bthd->bhd", probs, v).to(q.dtype)


def paged_decode_attention(
    q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor, context_lens: torch.Tensor, scale: float
) -> torch.Tensor:
    """Paged decode attention: the Triton kernel on CUDA, the torch reference elsewhere."""
    if q.is_cuda:
        from runtime.gpu.kernels.attention_triton import paged_decode_triton

        return paged_decode_triton(q, k_cache, v_cache, block_tables, context_lens, scale)
    return paged_decode_reference(q, k_cache, v_cache, block_tables, context_lens, scale)


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim)
