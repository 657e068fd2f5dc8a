"""Run an experiment's points: on local cores (a process pool) or on a Dask cluster.

The driver is the same for both backends: it submits every unfinished grid point and the next
point of every bisection chain, writes each point's files as it finishes (the workers return
them, `validation/points.py`), and feeds bisection chains their results. Points already on
disk are not submitted again. Why Dask rather than Ray: `docs/validation.md`.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from validation import store
from validation.bisection import bisect_chain
from validation.experiment import Experiment
from validation.points import capacity_scale, make_point, resolved_workload_document, run_point


class LocalBackend:
    """A process pool of `jobs` workers (`jobs` = 1: run in this process, no pool)."""

    name = "local"

    def __init__(self, jobs: int | None = None):
        self.jobs = max(1, jobs or os.cpu_count() or 1)
        self.pool = cf.ProcessPoolExecutor(self.jobs) if self.jobs > 1 else None

    def submit(self, fn, arg):
        if self.pool is not None:
            return self.pool.submit(fn, arg)
        future = cf.Future()
        try:
            future.set_result(fn(arg))
        except Exception as err:  # noqa: BLE001 - delivered to the driver like a pool's failure
            future.set_exception(err)
        return future

    def wait_any(self, futures):
        return cf.wait(futures, return_when=cf.FIRST_COMPLETED).done

    def close(self, *, wait: bool = True):
        if self.pool is not None:
            self.pool.shutdown(wait=wait, cancel_futures=True)


class DaskBackend:
    """Points as tasks on a Dask distributed cluster (`address`, or an existing `client`)."""

    name = "dask"

    def __init__(self, address: str | None = None, client=None):
        from dask.distributed import Client

        self.own = client is None
        self.client = client if client is not None else Client(address)

    def submit(self, fn, arg):
        return self.client.submit(fn, arg, pure=False)

    def wait_any(self, futures):
        from dask.distributed import wait

        return wait(list(futures), return_when="FIRST_COMPLETED").done

    def close(self, *, wait: bool = True):
        if self.own:
            self.client.close()


@dataclass
class SweepOutcome:
    out: Path
    ran: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)  # points that finished with status "error"
    crashes: list[str] = field(default_factory=list)  # points whose worker raised (not written; rerun retries)
    bisection: list[dict] = field(default_factory=list)


class _Progress:
    def __init__(self, total: int, quiet: bool):
        self.bar = None
        if not quiet and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=total, unit="pt", desc="sweep", file=sys.stderr)
            except ImportError:
                self.bar = None

    def step(self, note: str = "") -> None:
        if self.bar is not None:
            self.bar.update(1)
            if note:
                self.bar.set_postfix_str(note[:40])

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _chain_steps(spec) -> int:
    return 2 + max(0, math.ceil(math.log2(max(1e-12, (spec.hi - spec.lo) / spec.tolerance))))


def plan(experiment: Experiment):
    """(grid points, bisection chains as (label, point factory)) of `experiment`."""
    docs = {ref.label: resolved_workload_document(ref, experiment.base_dir) for ref in experiment.workloads}
    theta = {label: capacity_scale(doc) for label, doc in docs.items()}
    grid = []
    for ref in experiment.workloads:
        for policy in experiment.policies:
            for knobs in experiment.knob_grid():
                for load in experiment.loads:
                    for seed in experiment.seeds:
                        grid.append(make_point(experiment, ref, docs[ref.label], theta[ref.label], policy, load, seed, knobs))
    chains = []
    spec = experiment.bisect
    if spec is not None:
        for wl_label in spec.workloads:
            ref = experiment.workload_ref(wl_label)
            for pol_label in spec.policies:
                policy = experiment.policy(pol_label)
                for knobs in experiment.knob_grid():
                    for seed in experiment.seeds:
                        label = {"workload": wl_label, "policy": pol_label, "seed": seed, "knobs": knobs,
                                 "capacity_scale": theta[wl_label],
                                 "total_rate_per_s": sum(t["rate_per_s"] for t in docs[wl_label]["types"])}

                        def factory(load, ref=ref, policy=policy, seed=seed, knobs=knobs):
                            return make_point(experiment, ref, docs[ref.label], theta[ref.label], policy, load, seed, knobs,
                                              kind="bisect", requests=spec.requests)

                        chains.append((label, factory))
    return grid, chains


def run_sweep(experiment: Experiment, out: str | Path, backend, *, quiet: bool = False) -> SweepOutcome:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    store.clean_temporaries(out)
    grid, chains = plan(experiment)
    outcome = SweepOutcome(out)
    progress = _Progress(len(grid) + sum(_chain_steps(experiment.bisect) for _ in chains), quiet)
    pending: dict = {}  # future -> (point, chain index or None)
    live = {}  # chain index -> (generator, point factory)

    def finish(point, result, chain):
        if result.get("status") != "ok":
            outcome.errors.append(f"{store.folder_name(point)}: {result.get('error')}")
        if chain is not None:
            advance(chain, result)

    def advance(index, result):
        gen, factory = live[index]
        try:
            load = next(gen) if result is None else gen.send(result)
        except StopIteration as stop:
            outcome.bisection.append(stop.value)
            del live[index]
            return
        offer(factory(load), index)

    def offer(point, chain):
        done = store.finished_result(out, point)
        if done is not None:
            outcome.skipped += 1
            progress.step("skip")
            finish(point, done, chain)
        else:
            pending[backend.submit(run_point, point)] = (point, chain)

    try:
        for point in grid:
            offer(point, None)
        for i, (label, factory) in enumerate(chains):
            live[i] = (bisect_chain(experiment.bisect, label), factory)
            advance(i, None)
        while pending:
            for future in backend.wait_any(list(pending)):
                point, chain = pending.pop(future)
                try:
                    payload = future.result()
                except Exception as err:  # noqa: BLE001 - one broken point must not lose the others
                    outcome.crashes.append(f"{store.folder_name(point)}: {type(err).__name__}: {err}")
                    progress.step("crash")
                    if chain is not None:
                        live.pop(chain, None)
                    continue
                store.write_point(out, point, payload)
                outcome.ran += 1
                progress.step(point["policy"]["label"])
                finish(point, payload.result, chain)
    finally:
        progress.close()
        outcome.bisection.sort(key=lambda r: (r["workload"], r["policy"], r["seed"]))
        if chains and not live and not outcome.crashes:
            store.write_bisection(out, outcome.bisection)
        store.rebuild_table(out)
        store.pack(out)
    return outcome
