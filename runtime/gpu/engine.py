"""The GPU executor: drives any scheduler over a real Llama forward on the paged KV pool.

The loop is the simulator's (`runtime/executor.py`, shared) with the batch-time model replaced by
a measured forward: requests arrive at their times on a wall clock while the device works (open loop), the
scheduler is asked for a batch between steps, and `complete_step` stamps the same per-request
timestamps. Block ids come from the scheduler's `KVBlockManager(track_block_ids=True)`, so an
eviction (`batch.evicted`) needs no device work: the freed blocks are simply handed out again,
and the request re-prefills prompt + already generated tokens (recompute, arXiv 2504.11320).

Sampling is greedy and every request decodes exactly its `output_tokens` (end-of-sequence is
ignored, as in the papers' experiments). Prompt token ids are drawn per request from a seeded
generator, so a run is reproducible.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from runtime.collector import CollectorPause, frozen_heap
from runtime.executor import ServerLoop, run_server
from runtime.gpu.attention import PREFILL_BLOCK_M, PrefillSeq, pack_varlen
from runtime.gpu.kv_pool import KVPool
from runtime.gpu.model import LlamaRunner, StepInputs
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.step_log import SimResult, StepLog


@dataclass
class EngineResult:
    """The GPU run: the shared executor's `SimResult` fields plus the engine's own check."""

    requests: list[Request]
    end_s: float
    steps: StepLog = field(default_factory=StepLog)  # with the measured columns host_s and graph
    peak_kv_tokens: int = 0
    restart_token_mismatches: int = 0  # re-prefill after eviction sampled a different token
    horizon_s: float | None = None
    collector_pauses: list[CollectorPause] = field(default_factory=list)  # Python's GC in the run, wall s since its start
    schedule_s: list[float] | None = None  # per step on the wall clock: start of the turn to the engine's call

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    def to_sim_result(self, kv_capacity_tokens: int) -> SimResult:
        """The simulator's result type, so `runtime.metrics.summarize` and the run folder apply as is."""
        return SimResult(self.requests, self.end_s, len(self.steps), self.peak_kv_tokens, self.steps, kv_capacity_tokens, 0, self.horizon_s)

    def step_rows(self) -> list[dict]:
        """Each step's composition and measured time (the run folder's steps.json)."""
        rows = [
            {
                "start_s": s.start_s, "measured_s": s.end_s - s.start_s, "host_s": s.host_s, "graph": s.graph,
                "new_tokens": s.shape.new_tokens, "kv_tokens": s.shape.kv_tokens, "num_decodes": s.shape.num_decodes,
                "num_prefills": s.shape.num_prefills, "prefill_attention_pairs": s.shape.prefill_attention_pairs,
                "kv_used_tokens": s.kv_used_tokens, "num_evicted": s.num_evicted,
            }
            for s in self.steps
        ]
        if self.schedule_s is not None and len(self.schedule_s) == len(rows):
            for row, t in zip(rows, self.schedule_s):
                row["schedule_s"] = t  # of host_s: arrivals + scheduler call; the rest is input preparation
        return rows


class _WallClock:
    """The shared loop's device for the GPU: a real forward per batch, `time.perf_counter` as the clock."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.mismatches = 0
        self.sync = torch.cuda.synchronize if engine.runner.device.type == "cuda" else (lambda: None)
        self.sync()
        self.t0 = time.perf_counter()
        self.turn_start = self.t0
        self.schedule_s: list[float] = []

    def now_s(self) -> float:
        self.turn_start = time.perf_counter()  # the host time of the step starts here (scheduler call included)
        return self.turn_start - self.t0

    def execute(self, loop, batch: Batch, start_s: float) -> float:
        engine = self.engine
        # the host part before the engine: arrivals and the scheduler call (host_s also holds the
        # engine's input preparation after it)
        self.schedule_s.append(time.perf_counter() - self.turn_start)
        self.mismatches += engine.execute(batch)  # ends with a device sync (tokens to host)
        end_s = time.perf_counter() - self.t0
        loop.finish(batch, start_s, end_s, host_s=engine._prep_end - self.turn_start, graph=engine._used_graph)
        return end_s

    def wait_until(self, t_s: float) -> None:
        time.sleep(max(0.0, t_s - (time.perf_counter() - self.t0)))


class _ModelClock:
    """The real forward on the batch-time model's clock: the simulator's time line, so a run is
    deterministic and comparable step for step with `runtime.sim.simulate` (`Engine.run(step_time=...)`)."""

    def __init__(self, engine: Engine, step_time):
        self.engine, self.step_time_s, self.mismatches, self._now_s = engine, step_time.step_time_s, 0, 0.0

    def now_s(self) -> float:
        return self._now_s

    def execute(self, loop, batch: Batch, start_s: float) -> float:
        self.mismatches += self.engine.execute(batch)
        end_s = start_s + self.step_time_s(batch.shape())
        loop.finish(batch, start_s, end_s, host_s=0.0, graph=self.engine._used_graph)
        self._now_s = end_s
        return end_s

    def wait_until(self, t_s: float) -> None:
        self._now_s = t_s


class Engine:
    def __init__(self, runner: LlamaRunner, pool: KVPool, *, use_cuda_graphs: bool = True, mixed_graphs: bool = True, seed: int = 0, keep_logits: bool = False):
        self.runner, self.pool = runner, pool
        self.seed = seed
        self.keep_logits = keep_logits
        self.block_size = pool.block_size
        self.max_blocks_per_seq = -(-runner.max_positions // self.block_size)
        self.sequences: dict[int, list[int]] = {}  # request id -> prompt + generated token ids
        self.logits: dict[int, list[torch.Tensor]] = {}  # request id -> logits of each sampled token
        self.graphs = self.mixed_graphs = None
        if use_cuda_graphs and runner.device.type == "cuda":
            from runtime.gpu.cuda_graphs import DecodeGraphs
            from runtime.gpu.step_graphs import MixedGraphs

            self.graphs = DecodeGraphs(runner, pool, self.max_blocks_per_seq)
            if mixed_graphs:
                self.mixed_graphs = MixedGraphs(runner, pool, self.max_blocks_per_seq)

    # --- token bookkeeping -----------------------------------------------------------------
    def prompt_ids(self, request: Request) -> list[int]:
        rng = np.random.default_rng((self.seed, request.request_id))
        return rng.integers(0, self.runner.config.vocab_size, size=request.prompt_tokens).tolist()

    def _sequence(self, request: Request) -> list[int]:
        seq = self.sequences.get(request.request_id)
        if seq is None:
            seq = self.sequences[request.request_id] = self.prompt_ids(request)
        return seq

    def _slots(self, table: list[int], start: int, stop: int) -> list[int]:
        bs = self.block_size
        return [table[p // bs] * bs + p % bs for p in range(start, stop)]

    # --- one step ----------------------------------------------------------------------------
    def execute(self, batch: Batch) -> int:
        """Run `batch`'s forward and append sampled tokens; returns restart mismatches (0 normally)."""
        kv = self.pool
        items = sorted(batch.items, key=lambda w: not w.is_prefill)  # prefill rows first, then decodes
        decodes = [w for w in items if not w.is_prefill]
        if self.graphs is not None and len(decodes) == len(items) and self.graphs.bucket_for(len(items)):
            ids, pos, slots, lens, tables = [], [], [], [], []
            for w in items:
                seq, table = self._sequence(w.request), self._table(w.request)
                ctx = w.context_tokens
                ids.append(seq[ctx])
                pos.append(ctx)
                slots.append(table[ctx // self.block_size] * self.block_size + ctx % self.block_size)
                lens.append(ctx + 1)
                tables.append(table)
            self._prep_end, self._used_graph = time.perf_counter(), True
            logits, tokens = self.graphs.run(ids, pos, slots, lens, tables)
            return self._record(items, tokens.tolist(), logits)
        on_cuda = self.runner.device.type == "cuda"
        ids, pos, slots, prefills, sample_rows, varlen_seqs = [], [], [], [], [], []
        dec_tables, dec_lens, dec_seqs = [], [], []
        for w in items:
            seq, table = self._sequence(w.request), self._table(w.request)
            ctx, n = w.context_tokens, w.num_new_tokens
            row = len(ids)
            ids += seq[ctx : ctx + n]
            pos += range(ctx, ctx + n)
            slots += self._slots(table, ctx, ctx + n)
            sample_rows.append(row + n - 1)
            if w.is_prefill:
                if on_cuda:  # one metadata copy for all chunks (runtime.gpu.attention.pack_varlen)
                    varlen_seqs.append((row, n, ctx, table))
                else:
                    block_ids = torch.tensor(table, dtype=torch.int64) if ctx else None
                    prefills.append(PrefillSeq(row, n, ctx, block_ids))
            else:
                dec_tables.append(table)
                dec_lens.append(ctx + 1)
                dec_seqs.append((row, 1, ctx, table))
        bucket = self.mixed_graphs.bucket_for(len(ids), len(varlen_seqs), len(dec_seqs)) if self.mixed_graphs is not None else None
        if bucket is not None:  # a graphed prefill / mixed step (runtime.gpu.step_graphs)
            self._prep_end, self._used_graph = time.perf_counter(), True
            logits, tokens = self.mixed_graphs.run(bucket, ids, pos, slots, sample_rows, varlen_seqs, dec_seqs)
            return self._record(items, tokens.tolist(), logits)
        width = max((len(t) for t in dec_tables), default=0)  # pad only to this batch's longest table
        dec_tables = [t + [0] * (width - len(t)) for t in dec_tables]
        dev = self.runner.device
        # one host→device copy for ids, positions, slots and sample rows (rows of an even width keep
        # every row 16-byte aligned: Triton specialises on pointer alignment)
        T, S = len(ids), len(sample_rows)
        rows = np.zeros((4, T + T % 2), dtype=np.int64)
        rows[0, :T], rows[1, :T], rows[2, :T], rows[3, :S] = ids, pos, slots, sample_rows
        packed = torch.from_numpy(rows).to(dev)
        step = StepInputs(
            packed[0, :T], packed[1, :T], packed[2, :T],
            prefills,
            torch.tensor(dec_tables, dtype=torch.int32).to(dev) if decodes else None,
            torch.tensor(dec_lens, dtype=torch.int32).to(dev) if decodes else None,
            packed[3, :S],
            num_decode_rows=len(decodes),
            prefill_varlen=pack_varlen(varlen_seqs, PREFILL_BLOCK_M, dev) if varlen_seqs else None,
        )
        self._prep_end, self._used_graph = time.perf_counter(), False
        logits = self.runner.forward(step, kv)
        return self._record(items, logits.argmax(dim=-1).tolist(), logits)

    def _table(self, request: Request) -> list[int]:
        return self.scheduler.kv.block_table(request)

    def _record(self, items, tokens: list[int], logits: torch.Tensor) -> int:
        mismatches = 0
        for i, (w, token) in enumerate(zip(items, tokens)):
            end = w.context_tokens + w.num_new_tokens
            if w.is_prefill and end < w.request.prefill_target_tokens:
                continue  # a middle chunk samples nothing
            seq = self.sequences[w.request.request_id]
            if end == len(seq):
                seq.append(token)
                if self.keep_logits:
                    self.logits.setdefault(w.request.request_id, []).append(logits[i].detach().float().cpu())
            elif seq[end] != token:  # a restart recomputed a token it had already produced
                mismatches += 1
        return mismatches

    # --- the loop ----------------------------------------------------------------------------
    def run(self, scheduler: Scheduler, requests: list[Request], *, horizon_s: float | None = None, step_time=None) -> EngineResult:
        """Open-loop run through the shared executor loop (`runtime.executor.run_server`):
        arrivals on the wall clock, one scheduler call between steps, `execute` per batch.

        `step_time` (a batch-time model): every forward still runs, but the clock is the model's
        instead of the wall clock (no sleeping), so the run's steps can be compared one for one
        with the simulator's on the same arrivals."""
        if not scheduler.kv.track_block_ids:
            raise ValueError("the GPU engine needs KVBlockManager(track_block_ids=True): its block ids index the pool")
        if scheduler.kv.num_blocks > self.pool.shape.num_blocks or scheduler.kv.block_size != self.block_size:
            raise ValueError(
                f"scheduler memory ({scheduler.kv.num_blocks} blocks of {scheduler.kv.block_size}) does not fit the pool "
                f"({self.pool.shape.num_blocks} blocks of {self.block_size})"
            )
        self.scheduler = scheduler
        # on a frozen heap (its collection before the clock starts), each later collection recorded
        # on the run's clock (runtime/collector.py)
        with frozen_heap() as pauses:
            clock = _WallClock(self) if step_time is None else _ModelClock(self, step_time)
            origin = getattr(clock, "t0", None) or time.perf_counter()
            res = run_server(ServerLoop(scheduler, measured=True), requests, clock, horizon_s=horizon_s)
        return EngineResult(res.requests, res.end_s, res.steps, res.peak_kv_tokens, clock.mismatches, horizon_s,
                            [p.on_clock(origin) for p in pauses], getattr(clock, "schedule_s", None))
