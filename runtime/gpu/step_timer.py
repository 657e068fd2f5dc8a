"""Time the engine's own step path on synthetic batch compositions (calibration and benchmarks).

A composition is a list of `(num_new_tokens, context_tokens)` per sequence; a sequence with
`num_new_tokens == 1` and a complete prefix is a decode, anything else a prefill chunk on top of
`context_tokens` cached tokens. An item `(num_new_tokens, context_tokens, is_prefill)` says which
it is (a one-token chunk on a prefix, rebuilt from a recorded step, is a prefill chunk). Each call goes through `Engine.execute` (host preparation, the
forward or a decode CUDA-graph replay, greedy sampling, the device sync), so the times are what a
run's steps cost.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager

from fluid.batch_time import BatchShape
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.base import Batch, ScheduledWork


# GPU clock cycles a queued sleep kernel spins for `hide_launch` (about 2 ms at an H200's 1.98 GHz):
# longer than the host takes to record an event and launch a kernel on a slow host
_HIDE_LAUNCH_CYCLES = 4_000_000


def cuda_event_time_s(fn, repeats: int = 20, warmup: int = 3, *, hide_launch: bool = False) -> float:
    """Median device time of `fn` between two CUDA events (after `warmup` untimed calls): for a
    graph replay, the graph's device time; for an eager step, the span of its launches.

    `hide_launch`: queue a sleep kernel before the start event, so that `fn`'s launches are queued
    while the device sleeps and the span is the kernels' alone, not the host's launch latency
    (which, for one launch of a few tens of µs, is most of the span)."""
    import torch

    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(repeats):
        if hide_launch:
            torch.cuda._sleep(_HIDE_LAUNCH_CYCLES)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop) / 1e3)
    return statistics.median(times)


class _Holder:
    """Stands in for a scheduler: the engine reads block tables from `.kv`."""

    def __init__(self, kv: KVBlockManager):
        self.kv = kv


class StepTimer:
    """`sustain_s`: before a batch's warm-up and timed repeats, run it back to back for that many
    seconds, untimed, so it is timed in the power state a busy loop of such steps holds. An H200
    at its 700 W cap lowers its SM clock under sustained large steps: the live points of vLLM-v1
    and Sarathi-Serve at loads 0.8-0.9 ran at 685-689 W and 1,665-1,860 MHz where the
    calibration's mixed points, timed a few repeats at a time with the device idle between
    points, ran at 1,875-1,912 MHz and 585-631 W (runs 20-23, `docs/fidelity-h200-latency-gap.md`)."""

    def __init__(self, engine, *, sustain_s: float = 0.0):
        self.engine = engine
        self.sustain_s = sustain_s
        self.sustained_steps = 0  # untimed steps the sustain phases ran, over the timer's life
        pool = engine.pool
        self.kv = KVBlockManager(pool.shape.capacity_tokens, pool.block_size, track_block_ids=True)
        engine.scheduler = _Holder(self.kv)
        self._next_id = 10**9  # far from real request ids

    @staticmethod
    def _typed(composition) -> list[tuple[int, int, bool]]:
        return [item if len(item) == 3 else (item[0], item[1], not (item[0] == 1 and item[1] > 0)) for item in composition]

    def fits(self, composition) -> bool:
        typed = self._typed(composition)
        blocks = sum(self.kv.blocks_for_tokens(n + ctx) for n, ctx, _ in typed)
        return blocks <= self.kv.num_blocks and all(n + ctx <= self.engine.runner.max_positions for n, ctx, _ in typed)

    def _batch(self, composition) -> tuple[Batch, list[Request]]:
        batch, reqs = Batch(), []
        vocab = self.engine.runner.config.vocab_size
        for n, ctx, is_prefill in self._typed(composition):
            rid = self._next_id
            self._next_id += 1
            r = Request(rid, 0.0, ctx + n if is_prefill else ctx, 4)
            r.cached_tokens = ctx
            self.kv.grow(r, n)
            self.engine.sequences[rid] = [(rid * 7919 + i) % vocab for i in range(ctx + n + 1)]
            batch.items.append(ScheduledWork(r, n, ctx))
            reqs.append(r)
        return batch, reqs

    @contextmanager
    def holding(self, compositions):
        """The batches of `compositions`, their requests holding blocks and token ids until the
        block ends (then released). All of them at once: together they must fit the pool."""
        built = [self._batch(c) for c in compositions]
        try:
            yield [batch for batch, _ in built]
        finally:
            for _, reqs in built:
                for r in reqs:
                    self.kv.release(r)
                    self.engine.sequences.pop(r.request_id, None)

    def _timed(self, batches, repeats: int, warmup: int) -> list[list[dict]]:
        """Every timed repeat ({step_s, host_s, graph}) of each batch, round robin: repeat k of every
        batch before repeat k + 1 of any, so that a device that slows under sustained load
        (back-to-back steps of one H200 ran 12.3 → 15.0 ms over 12 repeats,
        docs/flatness-probe-h200.json) slows every batch alike instead of the last ones timed."""
        out: list[list[dict]] = [[] for _ in batches]
        if self.sustain_s > 0:
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < self.sustain_s:
                for batch in batches:
                    self.engine.execute(batch)
                    self.sustained_steps += 1
        for i in range(warmup + repeats):
            for k, batch in enumerate(batches):
                t = time.perf_counter()
                self.engine.execute(batch)
                if i >= warmup:
                    out[k].append({"step_s": time.perf_counter() - t, "host_s": self.engine._prep_end - t,
                                   "graph": self.engine._used_graph})
        return out

    def repeat_times(self, compositions, *, repeats: int, warmup: int = 0) -> list[list[dict]]:
        """Every timed repeat of each of `compositions` (round robin, see `_timed`)."""
        with self.holding(compositions) as batches:
            return self._timed(batches, repeats, warmup)

    @staticmethod
    def _medians(reps: list[dict]) -> dict:
        return {"step_s": statistics.median(r["step_s"] for r in reps), "host_s": statistics.median(r["host_s"] for r in reps),
                "graph": all(r["graph"] for r in reps)}

    def time_interleaved_s(self, compositions, *, repeats: int = 10, warmup: int = 2) -> list[dict]:
        """Median step time (s), host time and graph use of each of `compositions`, timed round robin."""
        return [self._medians(reps) for reps in self.repeat_times(compositions, repeats=repeats, warmup=warmup)]

    def time_s(self, composition, *, repeats: int = 5, warmup: int = 2) -> tuple[float, BatchShape]:
        """Median wall time of one step of `composition` (s) and its BatchShape."""
        with self.holding([composition]) as (batch,):
            row = self._medians(self._timed([batch], repeats, warmup)[0])
            shape = batch.shape()
        self.last_host_s = row["host_s"]  # input preparation before the device work
        self.last_graph = row["graph"]
        return row["step_s"], shape
