"""CUDA graphs for decode-only steps, one per batch-size bucket.

A decode step of a 7B model at small batch is a few hundred small kernels; replaying a captured
graph removes their launch cost so the step approaches weight-bytes / bandwidth. Inputs live in
static device buffers refilled before each replay; rows past the live batch are padding that
reads and writes only the pool's scratch block, so stale slots never touch a live request.

Buckets run up to 1,024 decodes (WAIT's steps near capacity hold up to 512 running requests, and a
pool of C tokens can seat at most C / 16 of them), dropped above the pool's block count (each
sequence holds at least one block). Every graph writes its logits into one shared output buffer
(`capture_bucket_graphs`), so the memory the graphs keep is one bucket's activations plus that
buffer, not one logits tensor per bucket: `GRAPH_MEMORY_BUDGET_BYTES` is the budget the
benchmarks check the captured graphs against.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.gpu.kv_pool import KVPool
from runtime.gpu.model import LlamaRunner, StepInputs

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256, 320, 384, 448, 512, 640, 768, 896, 1024)
# what the decode graphs and the whole-step graphs together may keep on the device (their private
# pool: the largest bucket's activations, the shared logits buffers); inside setup.GRAPH_MARGIN_BYTES
GRAPH_MEMORY_BUDGET_BYTES = 2 * 2**30


def bucket_at_least(n: int, buckets) -> int | None:
    """The smallest of the sorted `buckets` that holds `n`, or None when none does."""
    for b in buckets:
        if b >= n:
            return b
    return None


def seats_cap(buckets, pool_blocks: int):
    """`buckets` without those no step can fill: each sequence of a step holds at least one of the
    pool's blocks, so a bucket above the block count only costs capture time and memory."""
    kept = tuple(b for b in sorted(buckets) if b <= pool_blocks)
    above = [b for b in sorted(buckets) if b > pool_blocks]
    if above and (not kept or kept[-1] < pool_blocks):
        kept += (above[0],)  # the seats between the last kept bucket and the block count
    return kept


class DecodeGraphs:
    def __init__(self, runner: LlamaRunner, pool: KVPool, max_blocks_per_seq: int, buckets=DEFAULT_BUCKETS):
        self.runner, self.pool = runner, pool
        self.buckets = seats_cap(buckets, pool.shape.num_blocks)
        self.max_batch = self.buckets[-1]
        self.max_blocks = max_blocks_per_seq
        dev = runner.device
        n = self.max_batch
        self._host = {  # pinned host mirrors, one H2D copy each per step
            "ids": torch.zeros(n, dtype=torch.int64).pin_memory(),
            "pos": torch.zeros(n, dtype=torch.int64).pin_memory(),
            "slots": torch.zeros(n, dtype=torch.int64).pin_memory(),
            "lens": torch.zeros(n, dtype=torch.int32).pin_memory(),
            "tables": torch.zeros((n, max_blocks_per_seq), dtype=torch.int32).pin_memory(),
        }
        self._dev = {k: torch.zeros_like(v, device=dev) for k, v in self._host.items()}
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._fill_padding(0, n)
        for k in self._dev:
            self._dev[k].copy_(self._host[k])
        self._capture_all()

    def _fill_padding(self, start: int, stop: int) -> None:
        scratch = self.pool.scratch_block
        self._host["ids"][start:stop] = 0
        self._host["pos"][start:stop] = 0
        self._host["slots"][start:stop] = scratch * self.pool.block_size
        self._host["lens"][start:stop] = 1
        self._host["tables"][start:stop] = scratch

    def _step_inputs(self, b: int) -> StepInputs:
        d = self._dev
        return StepInputs(d["ids"][:b], d["pos"][:b], d["slots"][:b], [], d["tables"][:b], d["lens"][:b], None, num_decode_rows=b)

    def _capture_all(self) -> None:
        graphs, self.capture_stats = capture_bucket_graphs(self.runner, self.pool, self.buckets, self._step_inputs, lambda b: b)
        self._graphs.update(graphs)

    def bucket_for(self, batch_size: int) -> int | None:
        return bucket_at_least(batch_size, self.buckets)

    def run(self, ids, positions, slots, context_lens, tables: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """Replay the bucket's graph for a live batch; returns (logits [B, vocab], tokens [B]) views."""
        n = len(ids)
        b = self.bucket_for(n)
        h = self._host
        h["ids"][:n] = torch.from_numpy(np.asarray(ids, dtype=np.int64))
        h["pos"][:n] = torch.from_numpy(np.asarray(positions, dtype=np.int64))
        h["slots"][:n] = torch.from_numpy(np.asarray(slots, dtype=np.int64))
        h["lens"][:n] = torch.from_numpy(np.asarray(context_lens, dtype=np.int32))
        table_np = h["tables"].numpy()
        for i, t in enumerate(tables):
            table_np[i, : len(t)] = t
        self._fill_padding(n, b)
        for k in self._dev:
            self._dev[k][:b].copy_(h[k][:b], non_blocking=True)
        graph, logits, tokens = self._graphs[b]
        graph.replay()
        return logits[:n], tokens[:n]


def capture_bucket_graphs(runner: LlamaRunner, pool: KVPool, buckets, step_inputs, sample_rows) -> tuple[dict, dict]:
    """({bucket: (graph, logits, tokens)}, stats): every bucket's forward (`step_inputs(bucket)` over
    the static buffers) run once on a side stream to warm up (Triton compiles, cuBLAS handles) off
    the capture, then captured with greedy sampling, largest bucket first so that the smaller
    graphs reuse its memory pool. Shared by the decode graphs and the whole-step graphs.

    Each graph copies its logits (`sample_rows(bucket)` rows) into one output buffer shared by all
    buckets and drops its own, so later captures reuse that memory: replays are one at a time and
    the engine reads a step's logits before the next replay. The copy costs rows × vocab × 4 bytes
    of device traffic (0.13 MB at one decode row). `stats`: buckets, capture seconds and the device
    memory the capture kept (reserved bytes after minus before, output buffer included)."""
    import time

    torch.cuda.synchronize()
    reserved0, t0 = torch.cuda.memory_reserved(), time.perf_counter()
    rows = max(sample_rows(b) for b in buckets)
    shared = torch.empty((rows, runner.config.vocab_size), dtype=torch.float32, device=runner.device)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for b in buckets:
            runner.forward(step_inputs(b), pool)
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graphs, pool_handle = {}, None
    for b in sorted(buckets, reverse=True):
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=pool_handle):
            logits = runner.forward(step_inputs(b), pool)
            out = shared[: logits.shape[0]]
            out.copy_(logits)
            tokens = out.argmax(dim=-1)
        del logits  # its memory goes back to the shared graph pool for the next capture
        pool_handle = graph.pool()
        graphs[b] = (graph, out, tokens)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()  # the warm-up's cached blocks outside the graph pool are not the graphs' memory
    stats = {"buckets": list(buckets), "capture_s": time.perf_counter() - t0, "kept_bytes": torch.cuda.memory_reserved() - reserved0}
    return graphs, stats
