"""Symbolic derivation of the fluid closed forms (arXiv 2504.11320, the fluid benchmark) with sympy.

Nothing here restates a result: starting from the stage model and the balance equations,

    a_j  = Σ_{s=0}^{l'_j} (l_j + s)                 (KV tokens of one prompt over its stages)
    n_j  = λ_j ΔT                                    (each stage gets λ_j ΔT prompts per iteration)
    M    = Σ_j n_j a_j                               (KV tokens in use)
    N    = Σ_j n_j (l_j + l'_j)                      (new tokens per iteration)
    ΔT   = d0 + d_kv M + d_new N                     (linear batch time)

`derive(m)` solves the linear system for (n_1..n_m, M, N, ΔT) with m types, then solves
M*(θλ) = C for the capacity scale θ. `fluid/equilibrium.py` is the numeric twin; the tests
lambdify these expressions and compare.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy as sp


@dataclass(frozen=True)
class FluidSymbols:
    """The symbols of an m-type fluid model (paper names) and the derived expressions."""

    rates: tuple[sp.Symbol, ...]  # λ_j
    prefill: tuple[sp.Symbol, ...]  # l_j
    decode: tuple[sp.Symbol, ...]  # l'_j
    d0: sp.Symbol
    d_kv: sp.Symbol
    d_new: sp.Symbol
    capacity: sp.Symbol  # C
    footprints: tuple[sp.Expr, ...]  # a_j
    prompts_per_stage: tuple[sp.Expr, ...]  # n_j*
    iteration_time: sp.Expr  # ΔT*
    memory: sp.Expr  # M*
    new_tokens: sp.Expr  # N*
    throughput: sp.Expr  # Σ λ_j l'_j
    load_factor: sp.Expr  # L, read off ΔT* = d0 / (1 − L)
    capacity_scale: sp.Expr  # θ*

    @property
    def arguments(self) -> tuple[sp.Symbol, ...]:
        """The argument order of `lambdify_all`: λ..., l..., l'..., d0, d_kv, d_new, C."""
        return (*self.rates, *self.prefill, *self.decode, self.d0, self.d_kv, self.d_new, self.capacity)


def footprint(prefill: sp.Expr, decode: sp.Expr) -> sp.Expr:
    """a = Σ_{s=0}^{l'} (l + s), summed in closed form by sympy."""
    s = sp.Symbol("s", integer=True, nonnegative=True)
    return sp.factor(sp.summation(prefill + s, (s, 0, decode)))


@lru_cache(maxsize=8)
def derive(num_types: int) -> FluidSymbols:
    """Solve the balance equations of `num_types` types (see module docstring)."""
    if num_types < 1:
        raise ValueError(f"num_types must be ≥ 1, got {num_types}")
    pos = {"positive": True}
    lam = sp.symbols(f"lambda_1:{num_types + 1}", **pos)
    l = sp.symbols(f"l_1:{num_types + 1}", **pos)
    lp = sp.symbols(f"lp_1:{num_types + 1}", **pos)
    d0 = sp.Symbol("d0", **pos)
    d_kv, d_new = sp.symbols("d_kv d_new", nonnegative=True)
    C = sp.Symbol("C", **pos)
    a = tuple(footprint(l[j], lp[j]) for j in range(num_types))

    n = sp.symbols(f"n_1:{num_types + 1}")
    M, N, dT = sp.symbols("M N DeltaT")
    equations = [sp.Eq(n[j], lam[j] * dT) for j in range(num_types)]
    equations += [
        sp.Eq(M, sum(n[j] * a[j] for j in range(num_types))),
        sp.Eq(N, sum(n[j] * (l[j] + lp[j]) for j in range(num_types))),
        sp.Eq(dT, d0 + d_kv * M + d_new * N),
    ]
    sol = sp.solve(equations, [*n, M, N, dT], dict=True)
    if len(sol) != 1:  # a linear system with a unique solution: anything else is a derivation bug
        raise ArithmeticError(f"expected one solution of the balance equations, got {len(sol)}")
    sol = sol[0]
    dT_star = sp.simplify(sol[dT])
    M_star = sp.simplify(sol[M])
    # ΔT* = d0 / (1 − L) defines L; solving rather than pattern-matching keeps it honest
    load = sp.simplify(1 - d0 / dT_star)

    theta = sp.Symbol("theta", positive=True)
    scaled = {lam[j]: theta * lam[j] for j in range(num_types)}
    theta_sols = sp.solve(sp.Eq(M_star.subs(scaled, simultaneous=True), C), theta)
    if len(theta_sols) != 1:
        raise ArithmeticError(f"expected one capacity scale, got {theta_sols}")

    return FluidSymbols(
        rates=lam,
        prefill=l,
        decode=lp,
        d0=d0,
        d_kv=d_kv,
        d_new=d_new,
        capacity=C,
        footprints=a,
        prompts_per_stage=tuple(sp.simplify(sol[n[j]]) for j in range(num_types)),
        iteration_time=dT_star,
        memory=M_star,
        new_tokens=sp.simplify(sol[N]),
        throughput=sum(lam[j] * lp[j] for j in range(num_types)),
        load_factor=load,
        capacity_scale=sp.simplify(theta_sols[0]),
    )


def lambdify_all(symbols: FluidSymbols) -> dict[str, object]:
    """Numeric functions (numpy) of `symbols.arguments` for each derived quantity."""
    args = symbols.arguments
    f = lambda expr: sp.lambdify(args, expr, modules="numpy")  # noqa: E731
    return {
        "iteration_time_star_s": f(symbols.iteration_time),
        "memory_star_tokens": f(symbols.memory),
        "load_factor": f(symbols.load_factor),
        "capacity_scale": f(symbols.capacity_scale),
        "throughput_star_tokens_per_s": f(symbols.throughput),
        "prompts_per_stage": f(sp.Matrix(symbols.prompts_per_stage)),
        "footprints_token_iterations": f(sp.Matrix(symbols.footprints)),
    }
