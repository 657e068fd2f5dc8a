"""Every scheduling policy, one small module each, behind one registry.

The registry maps a CLI name to "module:Class"; modules are imported on first use so that a
broken or heavy policy never slows the others. Construct with `make_scheduler`.
"""

from __future__ import annotations

import importlib

from fluid.errors import InputError

SCHEDULERS: dict[str, str] = {
    "wait": "runtime.schedulers.wait:WaitScheduler",
    "nested-wait": "runtime.schedulers.nested_wait:NestedWaitScheduler",
    "fcfs": "runtime.schedulers.fcfs:FcfsScheduler",
    "vllm-v0": "runtime.schedulers.vllm_v0:VllmV0Scheduler",
    "vllm-v1": "runtime.schedulers.vllm_v1:VllmV1Scheduler",
    "sarathi": "runtime.schedulers.sarathi:SarathiScheduler",
    "orca": "runtime.schedulers.orca:OrcaScheduler",
    "mc-sf": "runtime.schedulers.mc_sf:McSfScheduler",
    "rad": "runtime.schedulers.rad:RadScheduler",
    "slai": "runtime.schedulers.slai:SlaiScheduler",
}


def scheduler_class(name: str):
    try:
        target = SCHEDULERS[name]
    except KeyError:
        raise InputError(
            f"unknown scheduler {name!r}; valid names: {', '.join(sorted(SCHEDULERS))}", field="scheduler"
        ) from None
    module, cls = target.split(":")
    return getattr(importlib.import_module(module), cls)


def make_scheduler(name: str, kv, **options):
    """Build scheduler `name` over the KV manager `kv`; `options` are the policy's knobs."""
    return scheduler_class(name)(kv, **options)
