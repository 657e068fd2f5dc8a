"""Shared builders for the simulator tests: small workloads and a scheduler of any registered name."""

from __future__ import annotations

import importlib.util

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.workload import RequestType, Workload
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeClass, RuntimePolicy, RuntimeSegment
from runtime.schedulers import SCHEDULERS, make_scheduler


def small_workload(lengths, rates, capacity_tokens=4000, d0_s=0.01, d1_s=1e-5) -> Workload:
    types = tuple(RequestType(f"t{i}", p, d, r) for i, ((p, d), r) in enumerate(zip(lengths, rates)))
    return Workload("small", capacity_tokens, AffineBatchTime(d0_s, d1_s), types)


def registered_names() -> list[str]:
    """Every registered scheduler whose module exists (the tests grow with the registry)."""
    return [n for n, t in SCHEDULERS.items() if importlib.util.find_spec(t.split(":")[0]) is not None]


POLICY_SCHEDULERS = ("wait", "nested-wait", "wait-capped", "nested-wait-capped", "wait-adaptive", "nested-wait-adaptive")


def policy_for(name: str, workload: Workload) -> RuntimePolicy:
    """A small WAIT / Nested WAIT policy for `workload` (thresholds ≥ 1, drain after 0.05 s); the
    adaptive schedulers also get the batch time and the rates they re-solve from."""
    if name.endswith("-adaptive"):
        import dataclasses

        from fluid.workload_io import workload_content_sha256
        from thresholds.adaptive import AdaptiveSettings
        from thresholds.policy import WorkloadRef

        base = policy_for(name.replace("-adaptive", ""), workload)
        classes = tuple(dataclasses.replace(c, rate_per_s=t.rate_per_s) for c, t in zip(base.classes, workload.types))
        ref = WorkloadRef(workload.name, workload_content_sha256(workload), tuple((t.name, t.rate_per_s) for t in workload.types))
        return dataclasses.replace(base, service_rule="capped", classes=classes, solved_for=ref,
                                   batch_time=workload.batch_time.to_dict(), slack=0.0, memory_bound="expected",
                                   representative_prefill_tokens=workload.types[0].prefill,
                                   adaptive=AdaptiveSettings(window_s=1.0, period_s=0.2))
    if name in ("wait", "wait-capped"):
        classes = tuple(RuntimeClass(t.name, t.prefill, t.decode, 2) for t in workload.types)
        return RuntimePolicy("wait", "cohort", 0.05, classes=classes)
    cuts = sorted({t.decode for t in workload.types})
    segments, first, n = [], 0, 3
    for cut in cuts:
        segments.append(RuntimeSegment(first, cut, max(1, n)))
        first, n = cut + 1, n - 1
    return RuntimePolicy("nested_wait", "cohort", 0.05, segments=tuple(segments))


def build_scheduler(name: str, workload: Workload, block_size: int = 16):
    kv = KVBlockManager(workload.kv_capacity_tokens, block_size)
    options = {"policy": policy_for(name, workload)} if name in POLICY_SCHEDULERS else {}
    try:
        return make_scheduler(name, kv, **options)
    except ModuleNotFoundError:
        pytest.skip(f"scheduler {name} not available")


def run_step(scheduler, t: float):
    """Schedule at `t`, complete the step one second later; the batch it ran."""
    batch = scheduler.schedule(t)
    scheduler.complete_step(batch, t, t + 1.0)
    return batch
