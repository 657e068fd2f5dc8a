"""Every scheduling policy, one small module each, behind one registry.

The registry maps a CLI name to "module:Class"; modules are imported on first use so that a
broken or heavy policy never slows the others. Construct with `make_scheduler`.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect

from fluid.errors import InputError

SCHEDULERS: dict[str, str] = {
    "wait": "runtime.schedulers.wait:WaitScheduler",
    "nested-wait": "runtime.schedulers.nested_wait:NestedWaitScheduler",
    "wait-capped": "runtime.schedulers.capped:CappedWaitScheduler",
    "nested-wait-capped": "runtime.schedulers.capped:CappedNestedWaitScheduler",
    "wait-adaptive": "runtime.schedulers.adaptive:AdaptiveCappedWaitScheduler",
    "nested-wait-adaptive": "runtime.schedulers.adaptive:AdaptiveCappedNestedWaitScheduler",
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
    """The class registered as `name`; InputError for an unknown or not yet available name."""
    try:
        target = SCHEDULERS[name]
    except KeyError:
        raise InputError(
            f"unknown scheduler {name!r}; valid names: {', '.join(sorted(SCHEDULERS))}", field="scheduler"
        ) from None
    module, cls = target.split(":")
    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as err:
        if err.name != module:
            raise
        raise InputError(
            f"scheduler {name!r} is registered but its module {module} is not available in this build; "
            f"available: {', '.join(available_schedulers())}",
            field="scheduler",
        ) from None
    return getattr(mod, cls)


def available_schedulers() -> list[str]:
    """Registered names whose module can be found (without importing it)."""
    return [name for name, target in SCHEDULERS.items() if importlib.util.find_spec(target.split(":")[0]) is not None]


def scheduler_options(name: str) -> tuple[str, ...]:
    """The keyword knobs scheduler `name` accepts (besides the KV manager).

    Knobs are the keyword-only parameters of the constructor; one that forwards `**knobs` to its
    base class gets the base class's knobs too.
    """
    names: list[str] = []
    for klass in scheduler_class(name).__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters.values()
        for p in params:
            if p.kind is not inspect.Parameter.KEYWORD_ONLY:
                continue  # knobs are keyword-only; positional parameters are the base's plumbing
            if p.name not in names:
                names.append(p.name)
        if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return tuple(names)


def check_options(name: str, options) -> None:
    """The one "has no option" check: InputError naming the options scheduler `name` lacks and
    listing the ones it has (also refuses an unknown scheduler name)."""
    known = scheduler_options(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(f"scheduler {name!r} has no option(s) {unknown}; its options: {', '.join(known) or 'none'}", field="option")


def make_scheduler(name: str, kv, **options):
    """Build scheduler `name` over the KV manager `kv`; `options` are the policy's knobs (`check_options`)."""
    cls = scheduler_class(name)
    check_options(name, options)
    return cls(kv, **options)
