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
from runtime.executor import ServerLoop, run_server, run_server_overlapped
from runtime.gpu.attention import PREFILL_BLOCK_M, PrefillSeq, pack_varlen
from runtime.gpu.kv_pool import KVPool
from runtime.gpu.model import LlamaRunner, StepInputs
from runtime.replay import shape_columns
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
    hidden_host_s: list[float] | None = None  # overlapped runs: per step, its host work done while the previous step ran
    host_bound: list[bool] | None = None  # overlapped runs: per step, whether it was done before the host came to wait for it

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
                **shape_columns(s.shape), "kv_used_tokens": s.kv_used_tokens, "num_evicted": s.num_evicted,
            }
            for s in self.steps
        ]
        if self.schedule_s is not None and len(self.schedule_s) == len(rows):
            for row, t in zip(rows, self.schedule_s):
                row["schedule_s"] = t  # of host_s: arrivals + scheduler call; the rest is input preparation
        if self.hidden_host_s is not None and len(self.hidden_host_s) == len(rows):
            for row, hidden, bound in zip(rows, self.hidden_host_s, self.host_bound):
                row["hidden_host_s"], row["host_bound"] = hidden, bound  # host_s is then only what the overlap exposed
        return rows


@dataclass
class _Prepared:
    """A step's host inputs (`Engine.prepare`): its path, its items in row order, the token ids
    (placeholders at `pending` = (index in ids, request id, position)) and the path's other lists."""

    kind: str  # "decode-graph", "mixed-graph" or "eager"
    items: list
    ids: list[int]
    pending: list[tuple[int, int, int]]
    args: tuple
    # per item, whether its last row samples a token (not a middle chunk), fixed here: by the time
    # an overlapped step is collected its requests were completed and maybe evicted, which moves
    # their prefill target
    samples: list[bool] = field(default_factory=list)


@dataclass
class _Launched:
    """A step queued on the device (`Engine.launch`): its sampled tokens are read by `collect`."""

    items: list
    samples: list[bool]
    logits: torch.Tensor
    tokens: torch.Tensor


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


class _OverlappedWallClock:
    """The wall clock for `run_server_overlapped`: step k + 1's scheduler call and input lists are
    made while step k runs; its pinned buffers, copies and launch follow step k's tokens.

    Per step it records the host time the overlap hid (`hidden_s`: arrivals, the scheduler call
    and the input lists, done while the previous step ran) and whether the device had already
    finished that step when the host came to wait for it (`host_bound`: the GPU sat idle)."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.mismatches = 0
        self.sync = torch.cuda.synchronize if engine.runner.device.type == "cuda" else (lambda: None)
        self.sync()
        self.t0 = time.perf_counter()
        self.turn_start = self.t0
        self.in_flight = False
        self.collected_at = self.t0
        self.hidden_s: list[float] = []
        self.host_bound: list[bool] = []
        self._hidden, self._ahead = 0.0, False

    def now_s(self) -> float:
        self.turn_start = time.perf_counter()
        return self.turn_start - self.t0

    def prepare(self, batch: Batch):
        self._ahead = self.in_flight  # a step runs while this one is prepared
        prepared = self.engine.prepare(batch)
        self._hidden = time.perf_counter() - self.turn_start if self._ahead else 0.0
        return prepared

    def launch(self, prepared):
        launched = self.engine.launch(prepared)
        # the host time the step exposed: from the later of its turn's start and the previous
        # step's tokens (its logged start) to its launch
        begin = max(self.turn_start, self.collected_at) if self._ahead else self.turn_start
        self.hidden_s.append(self._hidden)
        event = None
        if self.engine.runner.device.type == "cuda":
            event = torch.cuda.Event()
            event.record()
        self.in_flight = True
        return (launched, event), self.engine._prep_end - begin, self.engine._used_graph

    def collect(self, handle) -> float:
        launched, event = handle
        # done already: the device idled while the host prepared the next step (host-bound)
        self.host_bound.append(event.query() if event is not None else True)
        self.mismatches += self.engine.collect(launched)  # the device sync
        self.collected_at = time.perf_counter()
        self.in_flight = False
        return self.collected_at - self.t0

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
    # A step is prepare (host lists from the scheduler's batch: no device work), launch (pinned
    # buffers, one copy, the graph replay or the eager forward: queued on the stream, no sync) and
    # collect (the sampled tokens to the host: the sync). `execute` runs the three back to back;
    # the overlapped loop (`Engine.run(overlap_host=True)`) prepares step k + 1 while step k runs.
    def execute(self, batch: Batch) -> int:
        """Run `batch`'s forward and append sampled tokens; returns restart mismatches (0 normally)."""
        return self.collect(self.launch(self.prepare(batch)))

    def _ids(self, seq: list[int], request_id: int, ctx: int, n: int, ids: list[int], pending: list) -> None:
        """Append the token ids of positions ctx .. ctx + n - 1; a position the step in flight is
        still sampling (past the end of `seq`) gets a placeholder, filled at launch (`pending`)."""
        got = seq[ctx : ctx + n]
        ids += got
        for p in range(ctx + len(got), ctx + n):
            pending.append((len(ids), request_id, p))
            ids.append(0)

    def prepare(self, batch: Batch) -> _Prepared:
        """The host inputs of `batch`'s step: which path it takes and its lists (no device work)."""
        prep = self._prepare(sorted(batch.items, key=lambda w: not w.is_prefill))  # prefill rows first, then decodes
        prep.samples = [w.context_tokens + w.num_new_tokens >= w.request.prefill_target_tokens for w in prep.items]
        return prep

    def _prepare(self, items: list) -> _Prepared:
        decodes = [w for w in items if not w.is_prefill]
        ids, pending = [], []
        if self.graphs is not None and len(decodes) == len(items) and self.graphs.bucket_for(len(items)):
            pos, slots, lens, tables = [], [], [], []
            for w in items:
                seq, table = self._sequence(w.request), self._table(w.request)
                ctx = w.context_tokens
                self._ids(seq, w.request.request_id, ctx, 1, ids, pending)
                pos.append(ctx)
                slots.append(table[ctx // self.block_size] * self.block_size + ctx % self.block_size)
                lens.append(ctx + 1)
                tables.append(table)
            return _Prepared("decode-graph", items, ids, pending, (pos, slots, lens, tables))
        on_cuda = self.runner.device.type == "cuda"
        pos, slots, prefills, sample_rows, varlen_seqs = [], [], [], [], []
        dec_tables, dec_lens, dec_seqs = [], [], []
        for w in items:
            seq, table = self._sequence(w.request), self._table(w.request)
            ctx, n = w.context_tokens, w.num_new_tokens
            row = len(ids)
            self._ids(seq, w.request.request_id, ctx, n, ids, pending)
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
            return _Prepared("mixed-graph", items, ids, pending, (bucket, pos, slots, sample_rows, varlen_seqs, dec_seqs))
        width = max((len(t) for t in dec_tables), default=0)  # pad only to this batch's longest table
        dec_tables = [t + [0] * (width - len(t)) for t in dec_tables]
        return _Prepared("eager", items, ids, pending, (pos, slots, sample_rows, prefills, varlen_seqs, dec_tables, dec_lens, len(decodes)))

    def launch(self, prep: _Prepared) -> _Launched:
        """Queue `prep`'s step on the device (the placeholders filled from the tokens sampled since)."""
        ids = prep.ids
        for i, request_id, p in prep.pending:
            seq = self.sequences[request_id]
            if p >= len(seq):
                raise RuntimeError(f"request {request_id}: position {p} has no token yet (the step that samples it was not collected)")
            ids[i] = seq[p]
        if prep.kind == "decode-graph":
            self._prep_end, self._used_graph = time.perf_counter(), True
            logits, tokens = self.graphs.run(ids, *prep.args)
            return _Launched(prep.items, prep.samples, logits, tokens)
        if prep.kind == "mixed-graph":
            bucket, pos, slots, sample_rows, varlen_seqs, dec_seqs = prep.args
            self._prep_end, self._used_graph = time.perf_counter(), True
            logits, tokens = self.mixed_graphs.run(bucket, ids, pos, slots, sample_rows, varlen_seqs, dec_seqs)
            return _Launched(prep.items, prep.samples, logits, tokens)
        pos, slots, sample_rows, prefills, varlen_seqs, dec_tables, dec_lens, num_decodes = prep.args
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
            torch.tensor(dec_tables, dtype=torch.int32).to(dev) if num_decodes else None,
            torch.tensor(dec_lens, dtype=torch.int32).to(dev) if num_decodes else None,
            packed[3, :S],
            num_decode_rows=num_decodes,
            prefill_varlen=pack_varlen(varlen_seqs, PREFILL_BLOCK_M, dev) if varlen_seqs else None,
        )
        self._prep_end, self._used_graph = time.perf_counter(), False
        logits = self.runner.forward(step, self.pool)
        return _Launched(prep.items, prep.samples, logits, logits.argmax(dim=-1))

    def collect(self, step: _Launched) -> int:
        """Wait for `step`'s tokens (the device sync) and append them; returns restart mismatches."""
        return self._record(step.items, step.samples, step.tokens.tolist(), step.logits)

    def _table(self, request: Request) -> list[int]:
        return self.scheduler.kv.block_table(request)

    def _record(self, items, samples: list[bool], tokens: list[int], logits: torch.Tensor) -> int:
        mismatches = 0
        for i, (w, sampled, token) in enumerate(zip(items, samples, tokens)):
            if not sampled:
                continue  # a middle chunk samples nothing
            end = w.context_tokens + w.num_new_tokens
            seq = self.sequences[w.request.request_id]
            if end == len(seq):
                seq.append(token)
                if self.keep_logits:
                    self.logits.setdefault(w.request.request_id, []).append(logits[i].detach().float().cpu())
            elif seq[end] != token:  # a restart recomputed a token it had already produced
                mismatches += 1
        return mismatches

    # --- the loop ----------------------------------------------------------------------------
    def run(self, scheduler: Scheduler, requests: list[Request], *, horizon_s: float | None = None, step_time=None,
            overlap_host: bool = False) -> EngineResult:
        """Open-loop run through the shared executor loop (`runtime.executor.run_server`):
        arrivals on the wall clock, one scheduler call between steps, `execute` per batch.

        `step_time` (a batch-time model): every forward still runs, but the clock is the model's
        instead of the wall clock (no sleeping), so the run's steps can be compared one for one
        with the simulator's on the same arrivals.

        `overlap_host`: schedule and prepare each step while the previous one runs on the device
        (`runtime.executor.run_server_overlapped`; wall clock only). Off by default: the
        synchronous loop is the one the batch-time model's host terms are fitted on."""
        if not scheduler.kv.track_block_ids:
            raise ValueError("the GPU engine needs KVBlockManager(track_block_ids=True): its block ids index the pool")
        if scheduler.kv.num_blocks > self.pool.shape.num_blocks or scheduler.kv.block_size != self.block_size:
            raise ValueError(
                f"scheduler memory ({scheduler.kv.num_blocks} blocks of {scheduler.kv.block_size}) does not fit the pool "
                f"({self.pool.shape.num_blocks} blocks of {self.block_size})"
            )
        if overlap_host and step_time is not None:
            raise ValueError("overlap_host runs on the wall clock; on the model's clock (step_time) there is no host time to hide")
        self.scheduler = scheduler
        # on a frozen heap (its collection before the clock starts), each later collection recorded
        # on the run's clock (runtime/collector.py)
        with frozen_heap() as pauses:
            loop = ServerLoop(scheduler, measured=True)
            if overlap_host:
                clock = _OverlappedWallClock(self)
            else:
                clock = _WallClock(self) if step_time is None else _ModelClock(self, step_time)
            origin = getattr(clock, "t0", None) or time.perf_counter()
            if overlap_host:
                res = run_server_overlapped(loop, requests, clock, horizon_s=horizon_s)
            else:
                res = run_server(loop, requests, clock, horizon_s=horizon_s)
        return EngineResult(res.requests, res.end_s, res.steps, res.peak_kv_tokens, clock.mismatches, horizon_s,
                            [p.on_clock(origin) for p in pauses], getattr(clock, "schedule_s", None),
                            getattr(clock, "hidden_s", None), getattr(clock, "host_bound", None))
