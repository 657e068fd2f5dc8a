"""Closed forms of the fluid equilibrium (arXiv 2504.11320, the fluid benchmark).

With the linear batch time τ = d0 + d_kv·M + d_new·N, the balance n_j = λ_j ΔT gives
    a_j = (l'_j + 1)(l_j + l'_j/2)                              (memory-time footprint)
    L   = d_kv Σ_j λ_j a_j + d_new Σ_j λ_j (l_j + l'_j)      (load factor; = d1 Σ λ a for affine)
    ΔT* = d0 / (1 − L)                                          (iteration time)
    M*  = ΔT* Σ_j λ_j a_j                                       (KV tokens in use)
    n_j* = λ_j ΔT*                                              (prompts per stage)
    throughput* = Σ_j λ_j l'_j                                  (decode tokens/s)
    θ*  = C / (d0 Σ_j λ_j a_j + C·L)                            (capacity scale)
Stable iff L < 1 and M* ≤ C (equivalently θ* ≥ 1). `fluid/symbolic.py` derives these from the
balance equations and the tests compare both.

Two paths compute the same numbers: `closed_form(workload)` for a validated `Workload`, and
`closed_form_arrays(...)`, vectorised over numpy arrays, for very many types (10^5 in well under
a second) where building one `RequestType` object per type would dominate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

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
        """M*/C (inf when L ≥ 1)."""
        return self.memory_star_tokens / self.kv_capacity_tokens


@dataclass(frozen=True, slots=True)
class FluidArrays:
    """`FluidPoint` in array form, per type where it has a per-type value (numpy float64)."""

    footprints_token_iterations: np.ndarray  # a_j
    prompts_per_stage: np.ndarray  # n_j*
    load_factor: float  # L
    iteration_time_star_s: float  # ΔT*
    memory_star_tokens: float  # M*
    throughput_star_tokens_per_s: float
    capacity_scale: float  # θ*
    kv_capacity_tokens: float  # C

    @property
    def stable(self) -> bool:
        return self.load_factor < 1 and self.memory_star_tokens <= self.kv_capacity_tokens


def footprints(prefill: np.ndarray, decode: np.ndarray) -> np.ndarray:
    """a_j = (l'_j + 1)(l_j + l'_j/2) = Σ_{s=0..l'_j} (l_j + s), token·iterations."""
    prefill = np.asarray(prefill, dtype=np.float64)
    decode = np.asarray(decode, dtype=np.float64)
    return (decode + 1.0) * (prefill + decode / 2.0)


def load_factor_of(
    prefill: np.ndarray, decode: np.ndarray, rate_per_s: np.ndarray, d_kv: float, d_new: float
) -> float:
    """L = d_kv Σ λ_j a_j + d_new Σ λ_j (l_j + l'_j): the busy fraction that the traffic adds."""
    rate = np.asarray(rate_per_s, dtype=np.float64)
    lam_a = float(rate @ footprints(prefill, decode))
    lam_new = float(rate @ (np.asarray(prefill, np.float64) + np.asarray(decode, np.float64)))
    return d_kv * lam_a + d_new * lam_new


def closed_form_arrays(
    prefill: np.ndarray,
    decode: np.ndarray,
    rate_per_s: np.ndarray,
    *,
    d0_s: float,
    d_kv_s_per_token: float,
    d_new_s_per_token: float = 0.0,
    kv_capacity_tokens: float,
) -> FluidArrays:
    """The closed forms over arrays of types (no validation: the caller owns the inputs)."""
    prefill = np.asarray(prefill, dtype=np.float64)
    decode = np.asarray(decode, dtype=np.float64)
    rate = np.asarray(rate_per_s, dtype=np.float64)
    a = footprints(prefill, decode)
    lam_a = float(rate @ a)
    load = load_factor_of(prefill, decode, rate, d_kv_s_per_token, d_new_s_per_token)
    if load < 1:
        dt = d0_s / (1.0 - load)
        mem = dt * lam_a
    else:  # no finite equilibrium: the server falls behind under every policy
        dt = mem = math.inf
    C = float(kv_capacity_tokens)
    return FluidArrays(
        footprints_token_iterations=a,
        prompts_per_stage=rate * dt,
        load_factor=load,
        iteration_time_star_s=dt,
        memory_star_tokens=mem,
        throughput_star_tokens_per_s=float(rate @ decode),
        capacity_scale=C / (d0_s * lam_a + C * load),
        kv_capacity_tokens=C,
    )


def workload_arrays(workload: Workload) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(l, l', λ) of a workload's types as float64 arrays, in type order."""
    prefill = np.array([t.prefill for t in workload.types], dtype=np.float64)
    decode = np.array([t.decode for t in workload.types], dtype=np.float64)
    rate = np.array([t.rate_per_s for t in workload.types], dtype=np.float64)
    return prefill, decode, rate


def closed_form_full(workload: Workload) -> FluidArrays:
    """The closed forms of a workload in array form (per-type a_j and n_j* included)."""
    d0, d_kv, d_new = workload.batch_time.linear_coefficients()
    prefill, decode, rate = workload_arrays(workload)
    return closed_form_arrays(
        prefill, decode, rate, d0_s=d0, d_kv_s_per_token=d_kv, d_new_s_per_token=d_new,
        kv_capacity_tokens=workload.kv_capacity_tokens,
    )


def closed_form(workload: Workload) -> FluidPoint:
    """The fluid equilibrium of `workload` (closed forms above)."""
    arr = closed_form_full(workload)
    return FluidPoint(
        load_factor=arr.load_factor,
        iteration_time_star_s=arr.iteration_time_star_s,
        memory_star_tokens=arr.memory_star_tokens,
        prompts_per_stage=tuple(float(n) for n in arr.prompts_per_stage),
        throughput_star_tokens_per_s=arr.throughput_star_tokens_per_s,
        capacity_scale=arr.capacity_scale,
        kv_capacity_tokens=workload.kv_capacity_tokens,
    )


def instability_advice(point: FluidPoint) -> str:
    """One paragraph: why the workload is outside the stability region and what would fit.

    Two ways out: scale every rate by θ* (always fits), or, when only memory fails (L < 1), give
    the server M* tokens of KV cache.
    """
    L, C, theta = point.load_factor, point.kv_capacity_tokens, point.capacity_scale
    if L >= 1:
        return (
            f"load factor L = d_kv·Σλa + d_new·Σλ(l+l') = {L:.4g} ≥ 1: the server cannot keep up under "
            f"any policy and no amount of KV memory helps; scale every rate by at most θ* = {theta:.4g} "
            f"(the largest stable scale with C = {C} tokens) or use a faster batch-time model"
        )
    if point.memory_star_tokens > C:
        return (
            f"the equilibrium needs M* = {point.memory_star_tokens:.6g} KV tokens but C = {C} "
            f"(M*/C = {point.memory_use:.4g}; load factor L = {L:.4g} < 1): scale every rate by at most "
            f"θ* = {theta:.4g}, or give the server at least {math.ceil(point.memory_star_tokens)} KV tokens"
        )
    return f"stable: L = {L:.4g} < 1 and M* = {point.memory_star_tokens:.6g} ≤ C = {C} (θ* = {theta:.4g})"
