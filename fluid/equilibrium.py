"""Closed forms of the fluid equilibrium (arXiv 2504.11320; PAPERS.md §2).

With the linear batch time τ = d0 + d_kv·M + d_new·N, the balance n_j = λ_j ΔT gives
    L   = d_kv Σ_j λ_j a_j + d_new Σ_j λ_j (l_j + l'_j)      (load factor; = d1 Σ λ a for affine)
    ΔT* = d0 / (1 − L)                                          (iteration time)
    M*  = ΔT* Σ_j λ_j a_j                                       (KV tokens in use)
    n_j* = λ_j ΔT*                                              (prompts per stage)
    throughput* = Σ_j λ_j l'_j                                  (decode tokens/s)
    θ*  = C / (d0 Σ_j λ_j a_j + C·L)                            (capacity scale)
Stable iff L < 1 and M* ≤ C (equivalently θ* ≥ 1 when L < 1). `fluid/symbolic.py` derives these.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from fluid.workload import Workload


@dataclass(frozen=True, slots=True)
class FluidPoint:
    """The fluid equilibrium of a workload, in SI units (seconds, tokens, tokens/s)."""

    load_factor: float  # L
    iteration_time_star_s: float  # ΔT* (inf when L ≥ 1)
    memory_star_tokens: float  # M* (inf when L ≥ 1)
    prompts_per_stage: tuple[float, ...]  # n_j* per type
    throughput_star_tokens_per_s: float
    capacity_scale: float  # θ*
    kv_capacity_tokens: int

    @property
    def stable(self) -> bool:
        return self.load_factor < 1 and self.memory_star_tokens <= self.kv_capacity_tokens

    @property
    def memory_use(self) -> float:
        return self.memory_star_tokens / self.kv_capacity_tokens


def closed_form(workload: Workload) -> FluidPoint:
    d0, d_kv, d_new = workload.batch_time.linear_coefficients()
    lam_a = sum(t.rate_per_s * t.footprint_token_iterations for t in workload.types)
    lam_new = sum(t.rate_per_s * t.new_tokens for t in workload.types)
    load = d_kv * lam_a + d_new * lam_new
    C = workload.kv_capacity_tokens
    if load < 1:
        dt = d0 / (1 - load)
        mem = dt * lam_a
    else:
        dt = mem = math.inf
    n = tuple(t.rate_per_s * dt for t in workload.types)
    throughput = sum(t.rate_per_s * t.decode for t in workload.types)
    theta = C / (d0 * lam_a + C * load)
    return FluidPoint(load, dt, mem, n, throughput, theta, C)
