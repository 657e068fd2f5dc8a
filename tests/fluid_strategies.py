"""Hypothesis strategies and helpers shared by the fluid tests: random workloads."""

from __future__ import annotations

from hypothesis import strategies as st

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.workload import RequestType, Workload


@st.composite
def workloads(draw, *, max_types: int = 4, stable: bool | None = None, min_memory_slack: float = 0.0) -> Workload:
    """A random workload; `stable=True` keeps L < 1 and M* ≤ (1 − min_memory_slack)·C."""
    m = draw(st.integers(1, max_types))
    types = tuple(
        RequestType(
            f"t{j}",
            draw(st.integers(1, 2000)),
            draw(st.integers(1, 400)),
            draw(st.floats(0.01, 50.0, allow_nan=False, allow_infinity=False)),
        )
        for j in range(m)
    )
    d0 = draw(st.floats(1e-3, 0.05))
    if draw(st.booleans()):
        batch_time = AffineBatchTime(d0, draw(st.floats(1e-9, 1e-6)))
    else:
        batch_time = Linear3BatchTime(d0, draw(st.floats(0.0, 1e-6)), draw(st.floats(0.0, 1e-4)))
    C = draw(st.integers(1000, 2_000_000))
    w = Workload("random", C, batch_time, types)
    if stable:
        # scale the rates into the region: θ* scales to the boundary, a fraction below it is inside
        theta = closed_form(w).capacity_scale
        frac = draw(st.floats(0.05, 1.0 - max(min_memory_slack, 1e-3)))
        w = w.scaled(theta * frac)
    elif stable is False:
        w = w.scaled(closed_form(w).capacity_scale * draw(st.floats(1.05, 5.0)))
    return w
