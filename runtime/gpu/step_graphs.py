"""CUDA graphs for prefill, chunked-prefill and mixed prefill + decode steps, one per token bucket.

Decode-only steps replay `runtime.gpu.cuda_graphs.DecodeGraphs`. Every other step the schedulers
build (a cohort of prompts, a chunk on top of a cached prefix, chunks beside decodes) is replayed
from a whole-step graph here when it fits a bucket: its token count padded up to one of
`TOKEN_BUCKETS`, at most `MAX_PREFILLS` prefill chunks and `MAX_DECODES` decodes (both capped by
the pool's block count: each sequence holds a block). The buckets reach 3,072 tokens so that a
step of 1,024 decodes beside a 2,048-token chunk is graphed, and are 64–256 tokens apart above
256 so that padding costs at most a quarter of a step (18 × 48 = 864 tokens pads to 896, not 1,024). Whole-step
capture works because attention is the variable-length kernel
(`runtime.gpu.kernels.varlen_attention_triton`), whose metadata (sequence rows, block tables, the
tile map and tile count) is read from device buffers and whose grid is fixed per bucket; prefill
chunks go through its 64-row tiles, decodes through its 16-row tiles, in two launches a layer.
Chunks of at most `SHORT_CHUNK_TOKENS` tokens go through the 16-row launch too (one tile each, as a
decode): in 64-row tiles a cohort of 16-token prompts on a prefix left three quarters of every
tile idle and was the slowest split of its token count (docs/benchmarks-gpu.md).

Padded rows (past the live tokens) embed token 0 at position 0 and write their K/V into the pool's
scratch block; no sequence's metadata points at them, so attention leaves their rows unwritten
and nothing reads them. Logits come back for `sample_rows` padded to the bucket's sample capacity
(padding points at row 0). Steps outside the buckets run eagerly; `EngineStep.graph` records which.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.gpu.attention import DECODE_BLOCK_M, PREFILL_BLOCK_M, SHORT_CHUNK_TOKENS, VarlenBatch, tile_map_rows
from runtime.gpu.cuda_graphs import bucket_at_least, capture_bucket_graphs
from runtime.gpu.kv_pool import KVPool
from runtime.gpu.model import LlamaRunner, StepInputs

TOKEN_BUCKETS = (16, 32, 48, 64, 96, 128, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024, 1280, 1536, 1792, 2048, 2560, 3072)
MAX_PREFILLS = 64
MAX_DECODES = 1024
# programs of the decode launch: one per decode up to this many, then each walks several decodes
# (a grid of 1,024 × heads programs would mostly start only to find no tile)
DECODE_GRID_CAP = 256


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def split_short_chunks(prefill_seqs: list, decode_seqs: list, max_tokens: int) -> tuple[list, list]:
    """(the 64-row launch's sequences, the 16-row launch's): prefill chunks of at most `max_tokens`
    tokens join the decodes, after them; sequences are `(row_start, num_new, context_tokens, table)`."""
    short = [seq for seq in prefill_seqs if seq[1] <= max_tokens]
    if not short:
        return prefill_seqs, decode_seqs
    return [seq for seq in prefill_seqs if seq[1] > max_tokens], list(decode_seqs) + short


class _Varlen:
    """Pinned host and device buffers of one variable-length launch's metadata (regions 16-byte
    aligned: Triton specialises on pointer alignment, and a new alignment would compile mid-run)."""

    def __init__(self, max_seqs: int, max_tiles: int, max_blocks: int, device):
        self.max_seqs, self.max_tiles, self.width = max_seqs, max_tiles, max_blocks
        sizes = {"meta": 3 * max_seqs, "tiles": 2 * max_tiles, "count": 1, "tables": max_seqs * max_blocks}
        self.offsets, at = {}, 0
        for name, size in sizes.items():
            self.offsets[name] = at
            at += _cdiv(size, 4) * 4
        self.host = torch.zeros(at, dtype=torch.int32).pin_memory()
        self.np = self.host.numpy()
        self.dev = torch.zeros(at, dtype=torch.int32, device=device)

    def view(self, array, name: str, size: int, shape):
        o = self.offsets[name]
        return array[o : o + size].reshape(shape)

    def batch(self, grid_programs: int, block_m: int) -> VarlenBatch:
        d, s, t = self.dev, self.max_seqs, self.max_tiles
        return VarlenBatch(
            self.view(d, "meta", 3 * s, (s, 3)), self.view(d, "tables", s * self.width, (s, self.width)),
            self.view(d, "tiles", 2 * t, (t, 2)), self.view(d, "count", 1, (1,)), grid_programs, block_m,
        )

    def fill(self, seqs: list[tuple[int, int, int, list[int]]], tiles: list[tuple[int, int]] | None) -> None:
        """Write `seqs` = [(row_start, num_new, context_tokens, block table)]; `tiles` None keeps the
        static one-tile-per-sequence map (decodes)."""
        h = self.np
        n = len(seqs)
        meta = self.view(h, "meta", 3 * self.max_seqs, (self.max_seqs, 3))
        tables = self.view(h, "tables", self.max_seqs * self.width, (self.max_seqs, self.width))
        for i, (row, num_new, ctx, table) in enumerate(seqs):
            meta[i] = (row, num_new, ctx)
            if ctx:
                tables[i, : len(table)] = table
        if tiles:
            self.view(h, "tiles", 2 * self.max_tiles, (self.max_tiles, 2))[: len(tiles)] = tiles
        h[self.offsets["count"]] = n if tiles is None else len(tiles)

    def set_identity_tiles(self) -> None:
        tiles = self.view(self.np, "tiles", 2 * self.max_tiles, (self.max_tiles, 2))
        tiles[:, 0] = np.arange(self.max_tiles)
        tiles[:, 1] = 0

    def upload(self) -> None:
        self.dev.copy_(self.host, non_blocking=True)


class MixedGraphs:
    def __init__(self, runner: LlamaRunner, pool: KVPool, max_blocks_per_seq: int, *, buckets=TOKEN_BUCKETS,
                 max_prefills: int = MAX_PREFILLS, max_decodes: int = MAX_DECODES):
        self.runner, self.pool = runner, pool
        self.buckets = tuple(sorted(buckets))
        seats = pool.shape.num_blocks  # no step holds more sequences than the pool has blocks
        self.max_prefills, self.max_decodes = min(max_prefills, seats), min(max_decodes, seats)
        dev = runner.device
        top = self.buckets[-1]
        self.max_sample = max_prefills + max_decodes
        self._rows_host = torch.zeros(4, top, dtype=torch.int64).pin_memory()  # ids, positions, slots, sample rows
        self._rows_np = self._rows_host.numpy()
        self._rows_dev = torch.zeros_like(self._rows_host, device=dev)
        self._prefill = _Varlen(max_prefills, _cdiv(top, PREFILL_BLOCK_M) + max_prefills, max_blocks_per_seq, dev)
        seats_16 = max_decodes + (self.max_prefills if SHORT_CHUNK_TOKENS else 0)  # decodes and short chunks
        self._decode = _Varlen(seats_16, seats_16, max_blocks_per_seq, dev)
        self._decode.set_identity_tiles()
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._fill([], [], [], [], [], [], top)  # no live sequence: attention does nothing during warm-up
        self._capture_all()

    def bucket_for(self, num_tokens: int, num_prefills: int, num_decodes: int) -> int | None:
        if num_prefills > self.max_prefills or num_decodes > self.max_decodes or num_prefills == 0:
            return None
        return bucket_at_least(num_tokens, self.buckets)

    def _sample_capacity(self, bucket: int) -> int:
        return min(bucket, self.max_sample)

    def _step_inputs(self, bucket: int) -> StepInputs:
        r = self._rows_dev
        return StepInputs(
            r[0, :bucket], r[1, :bucket], r[2, :bucket], [], None, None, r[3, : self._sample_capacity(bucket)],
            prefill_varlen=self._prefill.batch(_cdiv(bucket, PREFILL_BLOCK_M) + min(self.max_prefills, bucket), PREFILL_BLOCK_M),
            decode_varlen=self._decode.batch(min(self.max_decodes, bucket, DECODE_GRID_CAP), DECODE_BLOCK_M),
        )

    def _capture_all(self) -> None:
        graphs, self.capture_stats = capture_bucket_graphs(self.runner, self.pool, self.buckets, self._step_inputs, self._sample_capacity)
        self._graphs.update(graphs)

    def _fill(self, ids, positions, slots, sample_rows, prefill_seqs, decode_seqs, bucket: int) -> None:
        n = len(ids)
        rows = self._rows_np
        rows[0, :n], rows[1, :n], rows[2, :n] = ids, positions, slots
        rows[0, n:bucket], rows[1, n:bucket] = 0, 0
        rows[2, n:bucket] = self.pool.scratch_block * self.pool.block_size
        s = len(sample_rows)
        rows[3, :s] = sample_rows
        rows[3, s : self._sample_capacity(bucket)] = 0
        prefill_seqs, decode_seqs = split_short_chunks(prefill_seqs, decode_seqs, SHORT_CHUNK_TOKENS)
        tiles = tile_map_rows([num_new for _, num_new, _, _ in prefill_seqs], PREFILL_BLOCK_M)
        self._prefill.fill(prefill_seqs, tiles)
        self._decode.fill(decode_seqs, None)
        self._rows_dev.copy_(self._rows_host, non_blocking=True)
        self._prefill.upload()
        self._decode.upload()

    def run(self, bucket: int, ids, positions, slots, sample_rows, prefill_seqs, decode_seqs) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay `bucket`'s graph for a live step; returns (logits [S, vocab], tokens [S]) views.

        The pinned buffers are rewritten only after the previous replay's copies finished: the
        engine reads every step's tokens (a sync) before it launches the next one, in the
        overlapped loop too (there only the next step's host lists are made ahead)."""
        self._fill(ids, positions, slots, sample_rows, prefill_seqs, decode_seqs, bucket)
        graph, logits, tokens = self._graphs[bucket]
        graph.replay()
        s = len(sample_rows)
        return logits[:s], tokens[:s]
