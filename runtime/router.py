"""Several replicas behind a router, each with its own scheduler, KV cache and clock.

Routers:

- `round-robin`: request i goes to replica i mod G.
- `random`: uniform, from the run's seed.
- `split`: a fixed per-type split, e.g. the fleet LP's (`fluid/fleet.py`): for each type, the
  probability of each replica (the LP's y_{g,j} / Σ_g y_{g,j}; `split_from_rates` normalises).
- `least-work`: join the replica with the least outstanding work, in tokens still to compute
  (prefill tokens left + decode tokens left, summed over its unfinished requests), at the moment
  of arrival. Ties go to the lowest replica index.

The first three do not look at server state, so the requests are routed up front and every
replica is simulated on its own (`runtime.sim.simulate`). `least-work` depends on the replicas'
state at each arrival, so it runs one joint event loop over all replica clocks: events are
arrivals and step ends, processed in time order (arrivals first on ties, as in the single-server
loop); each replica's steps go through the shared `runtime.executor.ServerLoop`, so memory
checks, peak KV, eviction times and the deadlock error are the simulator's.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from fluid.batch_time import BatchTimeModel
from fluid.errors import InputError
from fluid.numbers import check_number
from runtime.request import Request
from runtime.schedulers.base import Scheduler
from runtime.executor import ServerLoop, check_horizon
from runtime.sim import simulate
from runtime.step_log import SimResult, StepLog

ROUTERS = ("round-robin", "random", "split", "least-work")


def split_from_rates(rates_per_replica: dict[str, list[float]]) -> dict[str, list[float]]:
    """Normalise per-type served rates per replica (e.g. the fleet LP's y) into probabilities."""
    out = {}
    for name, rates in rates_per_replica.items():
        total = float(sum(rates))
        if total <= 0 or any(r < 0 for r in rates):
            raise InputError(f"the split of type {name!r} needs non-negative rates with a positive sum, got {rates}", field=f"split.{name}")
        out[name] = [float(r) / total for r in rates]
    return out


def check_split(split: dict, num_replicas: int, type_names) -> dict[str, np.ndarray]:
    if not isinstance(split, dict):
        raise InputError(f"the split must map each type name to per-replica probabilities, got {split!r:.80}", field="split")
    missing = sorted(set(type_names) - set(split))
    if missing:
        raise InputError(f"the split gives no probabilities for types {missing}", field="split")
    out = {}
    for name, probs in split.items():
        if not isinstance(probs, list) or any(isinstance(x, bool) or not isinstance(x, (int, float)) for x in probs):
            raise InputError(
                f"type {name!r} needs a list of {num_replicas} numbers (probabilities per replica), got {probs!r:.80}",
                field=f"split.{name}",
            )
        p = np.asarray(probs, float)
        if p.shape != (num_replicas,) or np.any(p < 0) or not np.isfinite(p).all() or abs(p.sum() - 1) > 1e-6:
            raise InputError(
                f"type {name!r} needs {num_replicas} non-negative probabilities summing to 1, got {list(probs)}",
                field=f"split.{name}",
            )
        out[name] = p
    return out


def route_static(requests: list[Request], num_replicas: int, router: str, *, seed: int = 0, split: dict | None = None) -> list[list[Request]]:
    """Assign requests (in arrival order) to replicas without looking at server state."""
    ordered = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    groups: list[list[Request]] = [[] for _ in range(num_replicas)]
    if router == "round-robin":
        for i, r in enumerate(ordered):
            groups[i % num_replicas].append(r)
    elif router == "random":
        picks = np.random.default_rng(seed).integers(0, num_replicas, len(ordered))
        for r, g in zip(ordered, picks):
            groups[int(g)].append(r)
    elif router == "split":
        if split is None:
            raise InputError("the split router needs a split (per-type probabilities per replica)", field="split")
        probs = check_split(split, num_replicas, {r.type_name for r in ordered})
        u = np.random.default_rng(seed).random(len(ordered))
        for r, x in zip(ordered, u):
            g = int(np.searchsorted(np.cumsum(probs[r.type_name]), x, side="right"))
            groups[min(g, num_replicas - 1)].append(r)
    else:
        raise InputError(f"router {router!r} is not a static router; use one of {', '.join(ROUTERS)}", field="router")
    return groups


def _outstanding_tokens(unfinished: list[Request]) -> int:
    work = 0
    for r in unfinished:
        # prefill left (l + s + 1 after a recompute, Request.evict), then the decodes left
        work += (r.prefill_remaining if r.in_prefill else 0) + (r.output_tokens - r.decode_steps_done)
    return work


class _Replica:
    """One server inside the joint event loop: its `ServerLoop`, its batch in flight and its wake-up."""

    __slots__ = ("index", "loop", "requests", "unfinished", "batch", "start_s", "end_s", "wake_s")

    def __init__(self, index: int, scheduler: Scheduler, trace: bool):
        self.index = index
        self.loop = ServerLoop(scheduler, index=index, trace=trace)
        self.requests: list[Request] = []
        self.unfinished: list[Request] = []
        self.batch = None
        self.start_s = self.end_s = 0.0
        self.wake_s: float | None = None

    def next_event_s(self) -> float:
        if self.batch is not None:
            return self.end_s
        return self.wake_s if self.wake_s is not None else math.inf

    def try_start(self, now_s: float, batch_time: BatchTimeModel) -> None:
        batch = self.loop.begin(now_s)
        self.batch = batch
        if batch is not None:
            self.start_s = now_s
            self.end_s = now_s + batch_time.step_time_s(batch.shape())
            self.wake_s = None
        else:
            wake = self.loop.scheduler.next_wakeup_s()
            self.wake_s = wake if wake is not None and wake > now_s else None

    def finish_step(self) -> None:
        if self.loop.finish(self.batch, self.start_s, self.end_s):
            self.unfinished = [r for r in self.unfinished if r.completion_s is None]
        self.batch = None


def _simulate_least_work(schedulers, requests, batch_time, *, horizon_s, trace) -> list[SimResult]:
    replicas = [_Replica(g, s, trace) for g, s in enumerate(schedulers)]
    arrivals = sorted(requests, key=lambda r: (r.arrival_s, r.request_id))
    n, i = len(arrivals), 0
    now = 0.0
    if n == 0:
        for rep in replicas:
            rep.loop.scheduler.on_arrivals_ended()
    while True:
        t_arrival = arrivals[i].arrival_s if i < n else math.inf
        rep = min(replicas, key=_Replica.next_event_s)
        t_replica = rep.next_event_s()
        t_next = min(t_arrival, t_replica)
        if t_next == math.inf or (horizon_s is not None and t_next >= horizon_s):
            break
        now = t_next
        if t_arrival <= t_replica:
            touched = set()
            while i < n and arrivals[i].arrival_s <= t_arrival:
                r = arrivals[i]
                target = min(replicas, key=lambda x: (_outstanding_tokens(x.unfinished), x.index))
                target.loop.scheduler.add_request(r)
                target.requests.append(r)
                target.unfinished.append(r)
                touched.add(target.index)
                i += 1
            if i == n:
                for x in replicas:
                    x.loop.scheduler.on_arrivals_ended()
                touched = set(range(len(replicas)))
            for g in sorted(touched):
                if replicas[g].batch is None:
                    replicas[g].try_start(now, batch_time)
        elif rep.batch is not None:
            rep.finish_step()
            rep.try_start(now, batch_time)
        else:
            rep.try_start(now, batch_time)
    stopped_by_horizon = horizon_s is not None and t_next != math.inf
    if horizon_s is None:
        for rep in replicas:
            rep.loop.check_finished(now)
    # requests that had not arrived when the clock stopped were never routed: list them on the
    # replica the router would pick at the stop, so that the fleet's summary still counts them
    for r in arrivals[i:]:
        min(replicas, key=lambda x: (_outstanding_tokens(x.unfinished), x.index)).requests.append(r)
    # a clock stopped by the horizon reads the horizon on every replica (a step in flight is not counted)
    return [rep.loop.result(rep.requests, horizon_s if stopped_by_horizon else rep.end_s, horizon_s) for rep in replicas]


def simulate_fleet(
    make_scheduler: Callable[[int], Scheduler],
    requests: list[Request],
    batch_time: BatchTimeModel,
    *,
    num_replicas: int,
    router: str = "round-robin",
    seed: int = 0,
    split: dict | None = None,
    horizon_s: float | None = None,
    trace: bool = False,
) -> list[SimResult]:
    """Simulate `num_replicas` servers (scheduler g = `make_scheduler(g)`); one result per replica."""
    check_number(num_replicas, "replicas", integer=True, minimum=1, what="the number of replicas")
    if router not in ROUTERS:
        raise InputError(f"unknown router {router!r}; valid routers: {', '.join(ROUTERS)}", field="router")
    check_horizon(horizon_s)
    schedulers = [make_scheduler(g) for g in range(num_replicas)]
    if router == "least-work":
        return _simulate_least_work(schedulers, requests, batch_time, horizon_s=horizon_s, trace=trace)
    groups = route_static(requests, num_replicas, router, seed=seed, split=split)
    results = []
    for g, (sched, group) in enumerate(zip(schedulers, groups)):
        res = simulate(sched, group, batch_time, horizon_s=horizon_s, trace=trace)
        res.replica = g
        results.append(res)
    return results


def combine_results(results: list[SimResult]) -> SimResult:
    """One `SimResult` over a fleet: all requests (arrival order), the latest end, all steps.

    KV figures of the combined result are per replica (peak of any replica; the step log's mean
    is over every replica's steps), since each replica has its own capacity C.
    """
    if len(results) == 1:
        return results[0]
    log = StepLog(
        type_counts=[] if all(r.steps.type_counts is not None for r in results) else None,
        host_s=[] if all(r.steps.host_s is not None for r in results) else None,
        graph=[] if all(r.steps.graph is not None for r in results) else None,
    )
    for res in results:
        log.extend(res.steps)
    requests = sorted((r for res in results for r in res.requests), key=lambda r: (r.arrival_s, r.request_id))
    return SimResult(
        requests,
        max(r.end_s for r in results),
        sum(r.num_steps for r in results),
        max(r.peak_kv_tokens for r in results),
        log,
        results[0].kv_capacity_tokens,
        -1,
        results[0].horizon_s,
    )
