"""Thresholds for a sweep point: WAIT / Nested WAIT solved for the point's own workload.

`solve:` in an experiment's policy says how (`docs/validation.md`):

- `policy: wait, method: fluid` (default): `thresholds.wait.solve_wait` at `slack` (default
  0.05), cohort service rule — the policy as `fluidsched solve` derives it;
- `policy: wait, method: batch-cap`: `solve_wait_batch_cap` with the batch cap `batch_cap`
  (default: the fluid batch Σ_j n_j*(l'_j + 1)) and the continuous rule — the authors'
  batch-cap recipe (arXiv 2504.11320, experiments);
- `method: cli`: exactly what `fluidsched solve --policy P ARGS` writes (`args:` the flags, e.g.
  `[--service-rule, capped]` for the capped rule), its automatic choice of slack included;
- `method: auto`: `fluid`, and when those thresholds do not fit in memory, `batch-cap` (WAIT) or
  `segments: auto` (Nested WAIT) — the rule `fluidsched demo` uses;
- `policy: nested-wait`: `solve_nested` with `segments` (None: one per decode length; an integer
  L; "auto") and `slack`, `batch_cap`.

Thresholds depend on the arrival rates, so a point is solved at its own load; above the fluid
capacity no policy exists, so points above `max_load` (default 0.98, in units of the capacity
scale θ*) run the thresholds solved at `max_load`.
"""

from __future__ import annotations

from fluid.workload import Workload


def fluid_batch_size(workload: Workload) -> int:
    """Requests in one fluid iteration, Σ_j n_j* (l'_j + 1): the batch-cap recipe's default cap."""
    from fluid.equilibrium import closed_form

    from fluid.errors import UnstableWorkloadError

    point = closed_form(workload)
    if not point.stable:
        raise UnstableWorkloadError(f"workload {workload.name!r} has no fluid equilibrium (load factor {point.load_factor:.3f}, "
                                    f"capacity scale {point.capacity_scale:.3f}), so no fluid batch size for the batch-cap recipe")
    return max(1, round(sum(n * (t.decode + 1) for n, t in zip(point.prompts_per_stage, workload.types))))


def solve_policy_document(workload: Workload, solve: dict) -> tuple[dict, str]:
    """(policy JSON document, how it was obtained) for `workload` at its own rates."""
    from thresholds.build import nested_policy, wait_policy

    from fluid.errors import FluidSchedError

    if solve.get("method") == "cli":
        return _solve_as_cli(workload, solve)
    slack = float(solve.get("slack", 0.05))
    if solve.get("method") == "auto":
        # the demo's rule: the fluid thresholds when they fit in memory, else the batch-cap recipe
        # (WAIT) or the automatic choice of the number of segments (Nested WAIT)
        try:
            return solve_policy_document(workload, {**solve, "method": "fluid"})
        except FluidSchedError as err:
            fallback = {**solve, "method": "batch-cap"} if solve["policy"] == "wait" else {**solve, "method": "fluid", "segments": "auto"}
            doc, how = solve_policy_document(workload, fallback)
            return doc, f"{how} (fluid thresholds do not fit: {str(err)[:80]}...)"
    if solve["policy"] == "wait":
        from thresholds.wait import solve_wait, solve_wait_batch_cap

        method = solve.get("method", "fluid")
        if method == "fluid":
            rule = solve.get("service_rule", "cohort")
            doc = wait_policy(workload, solve_wait(workload, slack=slack), service_rule=rule).to_dict()
            return doc, f"solve_wait(slack={slack:g}), {rule} rule"
        cap = int(solve.get("batch_cap") or fluid_batch_size(workload))
        rule = solve.get("service_rule", "continuous")
        slack = float(solve.get("slack", 0.0))
        sol = solve_wait_batch_cap(workload, cap, slack=slack)
        # the recipe fixes the batch cap and takes the thresholds it gives, whether or not every
        # WAIT condition holds (that is how the paper's experiments ran it); the policy file says
        # which conditions it breaks
        doc = wait_policy(workload, sol, service_rule=rule, allow_violations=True).to_dict()
        broken = [c.name for c in sol.conditions if not c.holds]
        return doc, f"solve_wait_batch_cap(B={cap}, slack={slack:g}), {rule} rule" + (f", breaks {', '.join(broken)}" if broken else "")
    from thresholds.nested import NestedOptions, solve_nested

    options = NestedOptions(segments=solve.get("segments"), slack=slack, batch_cap=solve.get("batch_cap"))
    doc = nested_policy(workload, solve_nested(workload, options), service_rule=solve.get("service_rule", "cohort")).to_dict()
    return doc, f"solve_nested(segments={solve.get('segments')}, slack={slack:g})"


def _solve_as_cli(workload: Workload, solve: dict) -> tuple[dict, str]:
    """Exactly what `fluidsched solve WORKLOAD --policy P ARGS...` writes for `workload` (its own
    choice of slack included): `solve: {policy: wait, method: cli, args: [--service-rule, capped]}`."""
    import argparse

    from thresholds import cli_solve

    parser = argparse.ArgumentParser(prog="fluidsched solve", exit_on_error=False)
    cli_solve.add_arguments(parser)
    flags = ["--policy", solve["policy"], *[str(a) for a in solve.get("args", [])]]
    try:
        args = parser.parse_args([workload.name, "-o", "unused.json", *flags])
    except (argparse.ArgumentError, SystemExit) as err:
        from fluid.errors import InputError

        raise InputError(f"not valid `fluidsched solve` arguments {flags}: {err}", field="solve.args") from None
    policy, slack, reason = cli_solve._solve(args, workload)  # the command's own solving step, not a copy
    return policy.to_dict(), f"fluidsched solve {' '.join(flags)} (slack {slack:g}: {reason})"
