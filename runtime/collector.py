"""Python's cyclic garbage collector during a live run: kept out of the steps' way, and on the record.

A full (generation-2) collection walks every container object the process holds; late in a GPU
fidelity run that is the calibration rows, the earlier points' requests and step logs and the
engine's token lists. In H200 fidelity runs 8, 9 and 12, one Sarathi-Serve step each spent
0.22-0.31 s in host preparation (the others well under 2 ms), with nothing in the step's
composition to explain it: a full collection is the likeliest cause, though those runs did not
record collections (`docs/benchmarks-gpu.md`, "Collector pauses"). A quarter-second stall of
every request in flight is not the scheduler's doing, so the live loop runs on a frozen heap:
one collection before it, then `gc.freeze()` moves everything alive into the permanent
generation, which later collections do not walk. The collector stays on for what the run itself
creates, and each collection during the run is recorded (`CollectorPause`), so a slow step can
be matched to a pause or ruled out.
"""

from __future__ import annotations

import gc
import time
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CollectorPause:
    generation: int
    start_s: float  # time.perf_counter() at its start, or on a run's clock after `on_clock`
    seconds: float

    def on_clock(self, origin_s: float) -> CollectorPause:
        """This pause with its start on a clock that reads 0 at perf_counter() = `origin_s`."""
        return CollectorPause(self.generation, self.start_s - origin_s, self.seconds)


@contextmanager
def frozen_heap():
    """Collect, freeze what is alive, and yield the list that each collection inside is appended
    to (start times as `time.perf_counter()` values). The heap is unfrozen on the way out."""
    gc.collect()
    gc.freeze()
    pauses: list[CollectorPause] = []
    started = [0.0]

    def on_collect(phase: str, info: dict) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(CollectorPause(int(info["generation"]), started[0], time.perf_counter() - started[0]))

    gc.callbacks.append(on_collect)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(on_collect)
        gc.unfreeze()


def pause_summary(pauses: list[CollectorPause]) -> dict:
    """Counts per generation, the total and the longest pause (s): what a result file keeps."""
    by_gen = {g: sum(1 for p in pauses if p.generation == g) for g in (0, 1, 2)}
    return {"collections_by_generation": by_gen, "total_s": sum(p.seconds for p in pauses),
            "longest_s": max((p.seconds for p in pauses), default=0.0),
            "longest_at_s": max(pauses, key=lambda p: p.seconds).start_s if pauses else None}
