"""The fluid LP (generalises the closed forms of arXiv 2504.11320, the fluid benchmark).

    maximise   Σ_j w_j x_j                      (w_j = l'_j: decode tokens/s, or given weights)
    subject to iteration_time   d0 t + Σ_j (d_kv a_j + d_new (l_j + l'_j)) x_j = 1
               kv_memory        Σ_j a_j x_j ≤ C t
               admission_upper  0 ≤ x_j ≤ λ_j
               batch_cap        Σ_j (l'_j + 1) x_j ≤ B t      (optional)
               token_budget     Σ_j (l_j + l'_j) x_j ≤ K t    (optional)
               tbt_slo          t ≥ 1 / TBT_max               (optional)

x_j is the admitted rate (requests/s) and t = 1/ΔT (Charnes–Cooper transform of the
linear-fractional program in n_j = x_j ΔT). Inside the stability region it returns x = λ and the
closed forms; outside it sheds load optimally and the duals price memory and time. Capacity mode
maximises θ with x = θλ (constraint `admission_scale`). `solve_fleet_lp` routes each type over g
GPUs (`fluid/fleet.py` has the matrices). Duals are ∂objective/∂(right-hand side) of each named
constraint written as above (≥ 0 for ≤ rows): for instance the dual of `kv_memory` times t is the
objective gained per extra token of C.

Solvers: CLARABEL (interior point), then HiGHS, through cvxpy; `solve_lp_linprog` solves the
same matrices with `scipy.optimize.linprog(method="highs")` as an independent cross-check.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from fluid.errors import InputError, SolverError
from fluid.fleet import GpuSpec, LPMatrices, LPOptions, build_matrices, unscale
from fluid.equilibrium import footprints
from fluid.workload import RequestType, Workload

SOLVERS = ("CLARABEL", "HIGHS")
BINDING_TOL = 1e-6  # on scaled rows: a share of memory / load / admission, dimensionless

# Near L·θ → 1 the iteration rate t̃ = 1 − θL is small and M = Σ a x / t amplifies its absolute
# error; CLARABEL's default 1e-8 gaps then leave ~1e-6 relative error in M, so ask for 1e-11.
_SOLVER_OPTIONS = {"CLARABEL": {"tol_gap_abs": 1e-11, "tol_gap_rel": 1e-11, "tol_feas": 1e-11}}
_ACCEPTED = {"optimal"}
_INFEASIBLE = {"infeasible", "infeasible_inaccurate"}
_UNBOUNDED = {"unbounded", "unbounded_inaccurate"}


@dataclass(frozen=True)
class FleetLPResult:
    """An optimal fluid LP, in SI units; per-GPU arrays have length g, per-type arrays length m."""

    type_names: tuple[str, ...]
    gpu_names: tuple[str, ...]
    split_rate_per_s: np.ndarray  # y_{g,j}, [g, m]
    iteration_rate_per_s: np.ndarray  # t_g
    iteration_time_s: np.ndarray  # ΔT_g = 1/t_g
    memory_tokens: np.ndarray  # M_g = Σ_j a_j y_{g,j} / t_g
    throughput_tokens_per_s: float  # Σ_{g,j} l'_j y_{g,j}
    objective: float
    capacity_scale: float | None  # θ in capacity mode
    binding: tuple[str, ...]  # inequality constraints with slack ≤ BINDING_TOL
    duals: dict[str, np.ndarray]
    solver: str

    @property
    def admitted_rate_per_s(self) -> np.ndarray:
        """x_j = Σ_g y_{g,j}."""
        return self.split_rate_per_s.sum(axis=0)


@dataclass(frozen=True)
class LPResult:
    """An optimal single-GPU fluid LP in SI units (see module docstring for the symbols)."""

    type_names: tuple[str, ...]
    admitted_rate_per_s: np.ndarray  # x_j
    iteration_rate_per_s: float  # t
    iteration_time_s: float  # ΔT = 1/t
    memory_tokens: float  # M = Σ a_j x_j / t
    prompts_per_stage: np.ndarray  # n_j = x_j ΔT
    throughput_tokens_per_s: float  # Σ l'_j x_j
    objective: float
    capacity_scale: float | None
    binding: tuple[str, ...]
    duals: dict[str, float | np.ndarray]  # per-GPU names → float, per-type names → array [m]
    solver: str

    rate_per_s: np.ndarray  # λ_j, the offered load

    @property
    def shed_rate_per_s(self) -> np.ndarray:
        """max(λ_j − x_j, 0): the load the optimum turns away (0 inside the stability region)."""
        return np.clip(self.rate_per_s - self.admitted_rate_per_s, 0.0, None)


def _options(weights, batch_cap, token_budget_tokens, tbt_slo_s, capacity) -> LPOptions:
    return LPOptions(
        weights=None if weights is None else tuple(float(w) for w in weights),
        batch_cap=batch_cap,
        token_budget_tokens=token_budget_tokens,
        tbt_slo_s=tbt_slo_s,
        capacity=capacity,
    )


def _precheck(gpus: tuple[GpuSpec, ...], options: LPOptions) -> None:
    """The one way this LP can be infeasible: an empty batch already breaks the TBT SLO."""
    if options.tbt_slo_s is None:
        return
    for gpu in gpus:
        d0 = gpu.batch_time.linear_coefficients()[0]
        if d0 > options.tbt_slo_s:
            raise SolverError(
                f"fluid LP infeasible: constraint 'tbt_slo' on GPU {gpu.name!r}: even an empty batch takes "
                f"d0 = {d0:.6g} s > TBT_max = {options.tbt_slo_s:.6g} s; relax the SLO above d0 or use a "
                f"faster batch-time model"
            )


def _solve_cvxpy(mats: LPMatrices, solvers: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    import cvxpy as cp  # local: the CLI's closed-form path must not pay for cvxpy

    z = cp.Variable(mats.num_vars, nonneg=True)
    cons = {
        name: (A @ z == b) if kind == "eq" else (A @ z <= b) for name, (A, b, kind) in mats.blocks.items()
    }
    problem = cp.Problem(cp.Maximize(mats.objective @ z), list(cons.values()))
    tried = []
    for solver in solvers:
        if solver not in cp.installed_solvers():
            tried.append(f"{solver} (not installed)")
            continue
        try:
            problem.solve(solver=solver, **_SOLVER_OPTIONS.get(solver, {}))
        except cp.error.SolverError as err:
            tried.append(f"{solver} (failed: {err})")
            continue
        if problem.status in _ACCEPTED:
            duals = {name: np.atleast_1d(np.asarray(c.dual_value, dtype=np.float64)) for name, c in cons.items()}
            return np.asarray(z.value, dtype=np.float64), duals, solver
        if problem.status in _INFEASIBLE | _UNBOUNDED:
            _raise_status(problem.status, mats)
        tried.append(f"{solver} (status {problem.status})")
    raise SolverError(f"fluid LP: no solver returned an optimal solution; tried {', '.join(tried)}")


def _raise_status(status: str, mats: LPMatrices) -> None:
    kind = "infeasible" if status in _INFEASIBLE else "unbounded"
    optional = [n for n in ("tbt_slo", "batch_cap", "token_budget") if n in mats.blocks]
    raise SolverError(
        f"fluid LP {kind} (solver status {status!r}); named constraints: {', '.join(mats.blocks)}; the "
        f"optional ones ({', '.join(optional) or 'none'}) are the usual cause: relax or drop them"
    )


def solve_lp_matrices_linprog(mats: LPMatrices) -> tuple[np.ndarray, dict[str, np.ndarray], str]:
    """The same scaled LP through scipy.optimize.linprog(method="highs"): the cross-check twin."""
    import scipy.sparse as sp
    from scipy.optimize import linprog

    eq = [(n, A, b) for n, (A, b, k) in mats.blocks.items() if k == "eq"]
    le = [(n, A, b) for n, (A, b, k) in mats.blocks.items() if k == "le"]
    res = linprog(
        -mats.objective,
        A_ub=sp.vstack([A for _, A, _ in le]).tocsr() if le else None,
        b_ub=np.concatenate([b for _, _, b in le]) if le else None,
        A_eq=sp.vstack([A for _, A, _ in eq]).tocsr() if eq else None,
        b_eq=np.concatenate([b for _, _, b in eq]) if eq else None,
        bounds=(0, None),
        method="highs",
    )
    if res.status == 2:
        _raise_status("infeasible", mats)
    if res.status == 3:
        _raise_status("unbounded", mats)
    if res.status != 0:
        raise SolverError(f"fluid LP: linprog(method='highs') failed: {res.message}")
    duals: dict[str, np.ndarray] = {}
    for group, marg in ((eq, res.eqlin.marginals if eq else None), (le, res.ineqlin.marginals if le else None)):
        offset = 0
        for name, A, _ in group:
            # linprog minimises −objective: its marginals are ∂(−obj)/∂b, so negate
            duals[name] = -np.asarray(marg[offset : offset + A.shape[0]], dtype=np.float64)
            offset += A.shape[0]
    return np.asarray(res.x, dtype=np.float64), duals, "linprog-highs"


def _fleet_result(types, gpus, mats, z, scaled_duals, solver) -> FleetLPResult:
    y, t, theta = unscale(mats, z, types, gpus)
    prefill = np.array([tp.prefill for tp in types], dtype=np.float64)
    decode = np.array([tp.decode for tp in types], dtype=np.float64)
    a = footprints(prefill, decode)
    binding = []
    for name, (A, b, kind) in mats.blocks.items():
        if kind != "le":
            continue  # equalities always hold; listing them says nothing
        slack = b - A @ z
        labels = types if name.startswith("admission") else gpus
        binding += [
            name if len(labels) == 1 else f"{name}[{labels[i].name}]" for i in np.flatnonzero(slack <= BINDING_TOL)
        ]
    obj_scale = mats.objective_scale
    duals = {name: d * mats.row_scale[name] * obj_scale for name, d in scaled_duals.items()}
    throughput = float((y @ decode).sum())
    return FleetLPResult(
        type_names=tuple(tp.name for tp in types),
        gpu_names=tuple(g.name for g in gpus),
        split_rate_per_s=y,
        iteration_rate_per_s=t,
        iteration_time_s=1.0 / t,
        memory_tokens=(y @ a) / t,
        throughput_tokens_per_s=throughput,
        objective=theta if mats.capacity else float(mats.objective @ z) * obj_scale,
        capacity_scale=theta,
        binding=tuple(binding),
        duals=duals,
        solver=solver,
    )


def solve_fleet_lp(
    types: tuple[RequestType, ...],
    gpus: tuple[GpuSpec, ...] | list[GpuSpec],
    *,
    weights=None,
    batch_cap: float | None = None,
    token_budget_tokens: float | None = None,
    tbt_slo_s: float | None = None,
    capacity: bool = False,
    solvers: tuple[str, ...] = SOLVERS,
    backend: str = "cvxpy",
) -> FleetLPResult:
    """The fleet LP: route each type's rate over `gpus` (y_{g,j}); see fluid/fleet.py."""
    gpus = tuple(gpus)
    types = tuple(types)
    options = _options(weights, batch_cap, token_budget_tokens, tbt_slo_s, capacity)
    _precheck(gpus, options)
    mats = build_matrices(types, gpus, options)
    if backend == "cvxpy":
        z, duals, solver = _solve_cvxpy(mats, tuple(solvers))
    elif backend == "linprog":
        z, duals, solver = solve_lp_matrices_linprog(mats)
    else:
        raise InputError(f"unknown LP backend {backend!r}: use 'cvxpy' or 'linprog'", field="backend")
    return _fleet_result(types, gpus, mats, z, duals, solver)


def solve_lp(
    workload: Workload,
    *,
    weights=None,
    batch_cap: float | None = None,
    token_budget_tokens: float | None = None,
    tbt_slo_s: float | None = None,
    capacity: bool = False,
    solvers: tuple[str, ...] = SOLVERS,
    backend: str = "cvxpy",
) -> LPResult:
    """The single-GPU fluid LP of `workload` (module docstring)."""
    fleet = solve_fleet_lp(
        workload.types, (GpuSpec.of(workload),), weights=weights, batch_cap=batch_cap,
        token_budget_tokens=token_budget_tokens, tbt_slo_s=tbt_slo_s, capacity=capacity,
        solvers=solvers, backend=backend,
    )
    x = fleet.split_rate_per_s[0]
    dt = float(fleet.iteration_time_s[0])
    return LPResult(
        type_names=fleet.type_names,
        admitted_rate_per_s=x,
        iteration_rate_per_s=float(fleet.iteration_rate_per_s[0]),
        iteration_time_s=dt,
        memory_tokens=float(fleet.memory_tokens[0]),
        prompts_per_stage=x * dt,
        throughput_tokens_per_s=fleet.throughput_tokens_per_s,
        objective=fleet.objective,
        capacity_scale=fleet.capacity_scale,
        binding=fleet.binding,
        duals={k: (v if k.startswith("admission") else float(v[0])) for k, v in fleet.duals.items()},
        solver=fleet.solver,
        rate_per_s=np.array([t.rate_per_s for t in workload.types], dtype=np.float64),
    )


def solve_lp_linprog(workload: Workload, **kwargs) -> LPResult:
    """`solve_lp` through scipy's linprog (HiGHS) instead of cvxpy: for cross-checks."""
    return solve_lp(workload, backend="linprog", **kwargs)
