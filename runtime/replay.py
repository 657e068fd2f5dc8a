"""Replay a recorded run's clock into the shared executor loop: same scheduler, same arrivals, the
recorded step times instead of a batch-time model.

A live GPU run is the executor loop (`runtime/executor.py`) on a wall clock; everything the
scheduler decides depends only on the arrivals and on the times at which it is asked
(`schedule(now_s)` after feeding every arrival up to `now_s`). `ReplayDevice` gives the loop
exactly those times: step k lasts what recorded step k lasted, and the clock the loop reads after
it is the recorded start of step k + 1 (idle time and the host time between steps included). If
the simulator's memory accounting is the engine's, the replay rebuilds every recorded step —
composition, KV held, evictions — and a difference marks the first step where they part.

Cost: O(1) per step on top of the loop.
"""

from __future__ import annotations

from dataclasses import dataclass

from fluid.batch_time import BatchShape
from fluid.errors import InputError
from runtime.executor import ServerLoop, run_server
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler
from runtime.step_log import SimResult

#: the per-step fields a replay compares with the recording (a step log row's names)
COMPARED = ("new_tokens", "kv_tokens", "num_decodes", "num_prefills", "prefill_attention_pairs", "kv_used_tokens", "num_evicted")


class ReplayDivergedError(RuntimeError):
    """The replayed run asked for more steps than were recorded."""


class ReplayDevice:
    """The executor loop's device on a recorded clock (see the module docstring)."""

    __slots__ = ("_starts", "_durations", "_now_s")

    def __init__(self, starts_s: list[float], durations_s: list[float]):
        if len(starts_s) != len(durations_s) or not starts_s:
            raise InputError(f"needs one start and one duration per recorded step, got {len(starts_s)} and {len(durations_s)}", field="steps")
        self._starts, self._durations = starts_s, durations_s
        self._now_s = starts_s[0]

    def now_s(self) -> float:
        return self._now_s

    def execute(self, loop: ServerLoop, batch: Batch, start_s: float) -> float:
        k = loop.num_steps
        if k >= len(self._durations):
            raise ReplayDivergedError(f"the replay needs step {k + 1}; the recording has {len(self._durations)} steps")
        end_s = start_s + self._durations[k]
        loop.finish(batch, start_s, end_s)
        self._now_s = max(end_s, self._starts[k + 1]) if k + 1 < len(self._starts) else end_s
        return end_s

    def wait_until(self, t_s: float) -> None:
        self._now_s = max(t_s, self._now_s)


@dataclass(frozen=True)
class ReplayReport:
    result: SimResult
    steps_recorded: int
    first_difference: int | None  # index of the first step whose composition or memory differs (None: none)
    difference: dict | None  # {field: (recorded, replayed)} at that step

    @property
    def identical(self) -> bool:
        return self.first_difference is None and self.result.num_steps == self.steps_recorded


def replay(scheduler: Scheduler, requests: list[Request], rows: list[dict]) -> ReplayReport:
    """Run `requests` through `scheduler` on the clock of recorded step `rows` (each with
    `start_s`, `measured_s` and the `COMPARED` fields, as `EngineResult.step_rows` writes them)."""
    for i, r in enumerate(rows):
        missing = [k for k in ("start_s", "measured_s", *COMPARED) if k not in r]
        if missing:
            raise InputError(f"recorded step {i} lacks {missing}", field="steps")
    device = ReplayDevice([r["start_s"] for r in rows], [r["measured_s"] for r in rows])
    loop = ServerLoop(scheduler)
    try:
        res = run_server(loop, requests, device)
    except ReplayDivergedError:
        res = loop.result(sorted(requests, key=lambda r: r.arrival_s), device.now_s())
    log = res.steps
    first = diff = None
    for k in range(min(len(rows), len(log))):
        s = log.record(k)
        mine = {**shape_columns(s.shape), "kv_used_tokens": s.kv_used_tokens, "num_evicted": s.num_evicted}
        d = {f: (rows[k][f], mine[f]) for f in COMPARED if rows[k][f] != mine[f]}
        recorded_tiles = rows[k].get("decode_key_tiles")
        if recorded_tiles is not None and mine["decode_key_tiles"] is not None and recorded_tiles != mine["decode_key_tiles"]:
            d["decode_key_tiles"] = (rows[k]["decode_key_tiles"], mine["decode_key_tiles"])  # recorded since it was added
        if d:
            first, diff = k, d
            break
    if first is None and len(log) != len(rows):
        first, diff = min(len(rows), len(log)), {"num_steps": (len(rows), len(log))}
    return ReplayReport(res, len(rows), first, diff)


def shape_columns(shape: BatchShape) -> dict:
    """A step row's composition columns (the inverse of `shape_of`): what every steps file and
    calibration table writes."""
    return {"new_tokens": shape.new_tokens, "kv_tokens": shape.kv_tokens, "num_decodes": shape.num_decodes,
            "num_prefills": shape.num_prefills, "prefill_attention_pairs": shape.prefill_attention_pairs,
            "decode_key_tiles": shape.decode_key_tiles}


def shape_of(row: dict) -> BatchShape:
    """The BatchShape of a step row (a steps file's, a calibration table's); a row written before
    `decode_key_tiles` was recorded leaves it to `BatchShape.key_tiles()` to estimate."""
    return BatchShape(row["new_tokens"], row["kv_tokens"], row["num_decodes"], row["num_prefills"], row["prefill_attention_pairs"],
                      row.get("decode_key_tiles"))
