"""The fluid LP in matrix form, for a fleet of g GPUs (one GPU is a fleet of one).

arXiv 2504.11320 (the fluid benchmark) generalised: GPU g with KV capacity C_g and linear batch time
(d0_g, d_kv_g, d_new_g) serves y_{g,j} requests/s of type j; t_g = 1/ΔT_g is its iteration rate
(Charnes–Cooper variable). Per GPU, with s_j = l_j + l'_j new tokens per request:

    (1) iteration_time  d0_g t_g + Σ_j (d_kv_g a_j + d_new_g s_j) y_{g,j} = 1
    (2) kv_memory       Σ_j a_j y_{g,j} ≤ C_g t_g
    (3) batch_cap       Σ_j (l'_j + 1) y_{g,j} ≤ B t_g          (optional)
    (4) token_budget    Σ_j s_j y_{g,j} ≤ K t_g                 (optional)
    (5) tbt_slo         t_g ≥ 1 / TBT_max                       (optional)
and per type
    (6) admission_upper Σ_g y_{g,j} ≤ λ_j                      (or, capacity mode,
    (6') admission_scale Σ_g y_{g,j} = θ λ_j, maximise θ).

The matrices are built in scaled variables ỹ_{g,j} = y_{g,j}/λ_j and t̃_g = d0_g t_g, and each
row is divided by its natural size (C_g/d0_g for memory, λ_j for admission, ...): a diagonal
change of units, the same LP, but every coefficient is then a dimensionless share of load or
memory, which keeps interior-point solvers accurate to ~1e-9 across workloads whose raw numbers
span twelve orders of magnitude. In capacity mode λ_j is replaced by λ_j·θ_ref
(θ_ref = Σ_g θ*_g) in that scaling and θ is measured in units of θ_ref, for the same reason. `row_scale[name]` records scaled row = original row × scale, so
duals convert back exactly (dual_original = dual_scaled × scale × objective_scale).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from fluid.batch_time import BatchTimeModel
from fluid.errors import InputError
from fluid.numbers import check_number
from fluid.equilibrium import footprints
from fluid.workload import RequestType, Workload


@dataclass(frozen=True, slots=True)
class GpuSpec:
    """One server of a fleet: its KV capacity C_g (tokens) and batch-time model."""

    name: str
    kv_capacity_tokens: int
    batch_time: BatchTimeModel

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise InputError(f"a GPU needs a non-empty name, got {self.name!r}", field="gpus[].name")
        check_number(self.kv_capacity_tokens, f"gpus[{self.name}].kv_capacity_tokens", integer=True, minimum=1, unit="number of tokens")
        if not callable(getattr(self.batch_time, "linear_coefficients", None)):
            raise InputError(
                f"needs a batch-time model with linear_coefficients(), got {self.batch_time!r}",
                field=f"gpus[{self.name}].batch_time",
            )

    @classmethod
    def of(cls, workload: Workload, name: str = "gpu0") -> "GpuSpec":
        return cls(name, workload.kv_capacity_tokens, workload.batch_time)


def _optional_positive(value: float | None, field_path: str) -> float | None:
    if value is None:
        return None
    return float(check_number(value, field_path, minimum=0, strict_minimum=True))


@dataclass(frozen=True, slots=True)
class LPOptions:
    """What the LP optimises and which optional constraints apply (to every GPU).

    `weights` None means decode tokens/s (w_j = l'_j). `batch_cap` B bounds the prompts in one
    batch, `token_budget_tokens` K the new tokens of one iteration, `tbt_slo_s` the iteration time.
    """

    weights: tuple[float, ...] | None = None
    batch_cap: float | None = None
    token_budget_tokens: float | None = None
    tbt_slo_s: float | None = None
    capacity: bool = False

    def __post_init__(self) -> None:
        _optional_positive(self.batch_cap, "batch_cap")
        _optional_positive(self.token_budget_tokens, "token_budget_tokens")
        _optional_positive(self.tbt_slo_s, "tbt_slo_s")
        if self.weights is not None:
            for j, w in enumerate(self.weights):
                check_number(w, f"weights[{j}]")


@dataclass
class LPMatrices:
    """Named constraint blocks over z = [ỹ (g·m, GPU-major), t̃ (g), θ (capacity mode only)]."""

    num_gpus: int
    num_types: int
    capacity: bool
    objective: np.ndarray  # maximise objective @ z
    objective_scale: float  # original objective = objective_scale × scaled objective
    rate_unit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ỹ_{g,j} = y_{g,j} / rate_unit[j]
    blocks: dict[str, tuple[sp.csr_matrix, np.ndarray, str]] = field(default_factory=dict)  # A, b, "eq"|"le"
    row_scale: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def num_vars(self) -> int:
        return self.num_gpus * self.num_types + self.num_gpus + int(self.capacity)

    def t_index(self, g: int) -> int:
        return self.num_gpus * self.num_types + g


def build_matrices(types: tuple[RequestType, ...], gpus: tuple[GpuSpec, ...], options: LPOptions) -> LPMatrices:
    """The scaled LP (module docstring) as sparse blocks, built with vector operations only."""
    g_count, m = len(gpus), len(types)
    if g_count == 0:
        raise InputError("a fleet needs at least one GPU", field="gpus")
    if options.weights is not None and len(options.weights) != m:
        raise InputError(f"needs one weight per type ({m}), got {len(options.weights)}", field="weights")
    prefill = np.array([t.prefill for t in types], dtype=np.float64)
    decode = np.array([t.decode for t in types], dtype=np.float64)
    lam = np.array([t.rate_per_s for t in types], dtype=np.float64)
    a = footprints(prefill, decode)
    new = prefill + decode
    coef = np.array([gpu.batch_time.linear_coefficients() for gpu in gpus], dtype=np.float64)  # [g, 3]
    d0, d_kv, d_new = coef[:, 0], coef[:, 1], coef[:, 2]
    C = np.array([gpu.kv_capacity_tokens for gpu in gpus], dtype=np.float64)

    n_y = g_count * m
    mats = LPMatrices(g_count, m, options.capacity, np.zeros(0), 1.0)
    if options.capacity:
        # θ can be anywhere from 1e-6 to 1e9: measure it in units of θ_ref = Σ_g θ*_g (the sum of
        # each GPU's closed-form capacity), so that the scaled optimum is of order one
        lam_a, lam_new = float(lam @ a), float(lam @ new)
        theta_ref = float(np.sum(C / (d0 * lam_a + C * (d_kv * lam_a + d_new * lam_new))))
        mats.objective_scale = theta_ref
        lam = lam * theta_ref
    mats.rate_unit = lam
    n = mats.num_vars
    rows = np.repeat(np.arange(g_count), m)  # row g covers y_{g,·}
    cols_y = np.arange(n_y)
    eye_t = sp.csr_matrix((-np.ones(g_count), (np.arange(g_count), n_y + np.arange(g_count))), shape=(g_count, n))

    def per_gpu_block(values: np.ndarray) -> sp.csr_matrix:  # values: [g, m] coefficients on ỹ
        return sp.csr_matrix((values.ravel(), (rows, cols_y)), shape=(g_count, n))

    # (1): t̃_g + Σ_j (d_kv a_j + d_new s_j) λ_j ỹ_gj = 1
    load_share = (np.outer(d_kv, a) + np.outer(d_new, new)) * lam  # [g, m]
    mats.blocks["iteration_time"] = (per_gpu_block(load_share) - eye_t, np.ones(g_count), "eq")
    mats.row_scale["iteration_time"] = np.ones(g_count)
    # (2): Σ_j (d0 a_j λ_j / C) ỹ_gj − t̃_g ≤ 0
    mem_share = np.outer(d0 / C, a * lam)
    mats.blocks["kv_memory"] = (per_gpu_block(mem_share) + eye_t, np.zeros(g_count), "le")
    mats.row_scale["kv_memory"] = d0 / C
    if options.batch_cap is not None:  # (3)
        B = options.batch_cap
        mats.blocks["batch_cap"] = (per_gpu_block(np.outer(d0 / B, (decode + 1) * lam)) + eye_t, np.zeros(g_count), "le")
        mats.row_scale["batch_cap"] = d0 / B
    if options.token_budget_tokens is not None:  # (4)
        K = options.token_budget_tokens
        mats.blocks["token_budget"] = (per_gpu_block(np.outer(d0 / K, new * lam)) + eye_t, np.zeros(g_count), "le")
        mats.row_scale["token_budget"] = d0 / K
    if options.tbt_slo_s is not None:  # (5): −t̃_g ≤ −d0_g / TBT
        mats.blocks["tbt_slo"] = (eye_t.copy(), -d0 / options.tbt_slo_s, "le")
        mats.row_scale["tbt_slo"] = d0.copy()
    # (6)/(6'): Σ_g ỹ_gj (− θ) ≤/= 1 (0)
    route = sp.csr_matrix(
        (np.ones(n_y), (np.tile(np.arange(m), g_count), cols_y)), shape=(m, n)
    )
    if options.capacity:
        theta_col = sp.csr_matrix((-np.ones(m), (np.arange(m), np.full(m, n - 1))), shape=(m, n))
        mats.blocks["admission_scale"] = ((route + theta_col).tocsr(), np.zeros(m), "eq")
        mats.row_scale["admission_scale"] = 1.0 / lam  # λ here is already λ·θ_ref
        mats.objective = np.zeros(n)
        mats.objective[n - 1] = 1.0
    else:
        mats.blocks["admission_upper"] = (route, np.ones(m), "le")
        mats.row_scale["admission_upper"] = 1.0 / lam
        w = decode if options.weights is None else np.asarray(options.weights, dtype=np.float64)
        wl = w * lam
        scale = float(np.abs(wl).sum())
        # an all-zero objective (zero weights or no traffic) has scale 0: every dual is then 0
        # exactly, not the solver's 1e-14 noise times a stand-in scale
        mats.objective = np.concatenate([np.tile(wl / (scale or 1.0), g_count), np.zeros(n - n_y)])
        mats.objective_scale = scale
    for name, (A, b, kind) in mats.blocks.items():
        mats.blocks[name] = (A.tocsr(), b, kind)
    return mats


def unscale(mats: LPMatrices, z: np.ndarray, types: tuple[RequestType, ...], gpus: tuple[GpuSpec, ...]):
    """(y [g, m] requests/s, t [g] iterations/s, θ or None) from the scaled solution z."""
    g_count, m = mats.num_gpus, mats.num_types
    d0 = np.array([gpu.batch_time.linear_coefficients()[0] for gpu in gpus], dtype=np.float64)
    y = np.clip(z[: g_count * m].reshape(g_count, m), 0.0, None) * mats.rate_unit
    t = z[g_count * m : g_count * m + g_count] / d0
    theta = float(z[-1]) * mats.objective_scale if mats.capacity else None
    return y, t, theta
