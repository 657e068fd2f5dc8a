"""The fluid benchmark of LLM serving under a KV-cache limit (arXiv 2504.11320, the serving model and the fluid benchmark).

Importing `fluid` loads nothing heavy: cvxpy is imported by `fluid.lp` when a solve runs and
scipy by `fluid.ode` / `fluid.fleet`; nothing here ever imports torch.

Modules: `workload` (types, rates, capacity), `batch_time` (iteration-time models),
`equilibrium` (closed forms, scalar and vectorised), `symbolic` (sympy derivation of the closed
forms), `fleet` + `lp` (the fluid LP: admission, capacity and fleet routing, with a linprog twin),
`ode` (the fluid ODE under WAIT or greedy FCFS admission), `cli` (`fluidsched fluid`).

Glossary: paper symbol ↔ code name
    j                  request type, `Workload.types[j]`
    λ_j                `RequestType.rate_per_s`                     (requests/s)
    l_j, l'_j          `RequestType.prefill`, `RequestType.decode`  (tokens)
    a_j                `footprints()`, `RequestType.footprint_token_iterations`
                       = (l'_j + 1)(l_j + l'_j/2)                  (token·iterations)
    C                  `Workload.kv_capacity_tokens`               (KV tokens)
    d_0, d_1           `AffineBatchTime.d0_s`, `.d1_s_per_token`
    d_kv, d_new        `Linear3BatchTime.d_kv_s_per_token`, `.d_new_s_per_token`
    L                  `FluidPoint.load_factor` = d_kv Σλa + d_new Σλ(l+l')
    ΔT*                `FluidPoint.iteration_time_star_s`          (s)
    M*                 `FluidPoint.memory_star_tokens`             (KV tokens)
    n_j*               `FluidPoint.prompts_per_stage`              (prompts per stage)
    throughput*        `FluidPoint.throughput_star_tokens_per_s`   (decode tokens/s)
    θ*                 `FluidPoint.capacity_scale`                 (largest stable rate scale)
    x_j, t             `LPResult.admitted_rate_per_s`, `.iteration_rate_per_s` (t = 1/ΔT)
    y_{g,j}, t_g       `FleetLPResult.split_rate_per_s`, `.iteration_rate_per_s`
    B, K, TBT_max      LP options `batch_cap`, `token_budget_tokens`, `tbt_slo_s`
    n_j (WAIT)         `simulate_fluid(thresholds=...)`            (prompts per stage per iteration)
"""
