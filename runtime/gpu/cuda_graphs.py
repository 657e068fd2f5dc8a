"""CUDA graphs for decode-only steps, one per batch-size bucket.

A decode step of a 7B model at small batch is a few hundred small kernels; replaying a captured
graph removes their launch cost so the step approaches weight-bytes / bandwidth. Inputs live in
static device buffers refilled before each replay; rows past the live batch are padding that
reads and writes only the pool's scratch block, so stale slots never touch a live request.
"""

from __future__ import annotations

import numpy as np
import torch

from runtime.gpu.kv_pool import KVPool
from runtime.gpu.model import LlamaRunner, StepInputs

DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 256)


class DecodeGraphs:
    def __init__(self, runner: LlamaRunner, pool: KVPool, max_blocks_per_seq: int, buckets=DEFAULT_BUCKETS):
        self.runner, self.pool = runner, pool
        self.buckets = tuple(sorted(buckets))
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
        self._graphs.update(capture_bucket_graphs(self.runner, self.pool, self.buckets, self._step_inputs))

    def bucket_for(self, batch_size: int) -> int | None:
        for b in self.buckets:
            if b >= batch_size:
                return b
        return None

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


def capture_bucket_graphs(runner: LlamaRunner, pool: KVPool, buckets, step_inputs) -> dict:
    """{bucket: (graph, logits, tokens)}: every bucket's forward (`step_inputs(bucket)` over the
    static buffers) run once on a side stream to warm up (Triton compiles, cuBLAS handles) off the
    capture, then captured with greedy sampling, largest bucket first so that the smaller graphs
    reuse its memory pool. Shared by the decode graphs and the whole-step graphs."""
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
            tokens = logits.argmax(dim=-1)
        pool_handle = graph.pool()
        graphs[b] = (graph, logits, tokens)
    torch.cuda.synchronize()
    return graphs
