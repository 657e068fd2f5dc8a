"""`fluidsched fluid WORKLOAD`: the fluid benchmark of a workload (arXiv 2504.11320, the fluid benchmark).

Closed forms always; the LP (`--lp`), the capacity LP (`--capacity`) and the fluid ODE
(`--ode SECONDS`) on request. cvxpy and scipy are imported only by those options, so the
closed-form path starts fast. An unstable workload prints its report, then exits with code 3
and says which rate scale or memory would fit.
"""

from __future__ import annotations

import argparse
import math
import sys

from fluid.cli_json import print_json
from fluid.equilibrium import FluidArrays, closed_form, closed_form_full, instability_advice
from fluid.errors import InputError, UnstableWorkloadError
from fluid.numbers import check_number
from fluid.tables import format_table
from fluid.workload import Workload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", metavar="WORKLOAD", help="workload YAML/JSON file or preset name")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    parser.add_argument("--lp", action="store_true", help="solve the fluid LP (admission, binding constraints, duals)")
    parser.add_argument("--capacity", action="store_true", help="solve the capacity LP: the largest stable scale θ of all rates")
    parser.add_argument("--ode", type=float, metavar="SECONDS", help="integrate the fluid ODE (WAIT and FCFS) from empty for SECONDS")
    parser.add_argument("--rate-scale", type=float, default=1.0, metavar="X", help="multiply every rate by X (default 1)")
    parser.add_argument("--batch-cap", type=float, metavar="B", help="LP: at most B prompts per batch")
    parser.add_argument("--token-budget", type=float, metavar="K", help="LP: at most K new tokens per iteration")
    parser.add_argument("--tbt-slo", type=float, metavar="S", help="LP: iteration time at most S seconds")


def _num(x: float) -> float | None:
    """JSON has no infinity: an infinite quantity (no equilibrium) is written as null."""
    return float(x) if math.isfinite(x) else None


def request_too_big(workload: Workload) -> str:
    """Why the workload cannot be served at all when one request of a type outgrows C, else ''.

    The fluid point can still sit below C (it averages over many requests), but a request whose
    prompt plus output exceeds the KV capacity never completes under any policy.
    """
    worst = max(workload.types, key=lambda t: t.prefill + t.decode)
    need = worst.prefill + worst.decode
    if need <= workload.kv_capacity_tokens:
        return ""
    return (f"one request of type {worst.name!r} needs {need} KV tokens (prefill {worst.prefill} + decode {worst.decode}) "
            f"but C = {workload.kv_capacity_tokens}; it can never be served, so raise the KV capacity to at least {need} "
            f"tokens or shorten that type")


def closed_form_report(workload: Workload, arr: FluidArrays) -> dict:
    d0, d_kv, d_new = workload.batch_time.linear_coefficients()
    point = closed_form(workload)
    too_big = request_too_big(workload)
    rows = []
    for t, a, n in zip(workload.types, arr.footprints_token_iterations, arr.prompts_per_stage):
        rows.append({
            "name": t.name, "prefill_tokens": t.prefill, "decode_tokens": t.decode, "rate_per_s": t.rate_per_s,
            "footprint_token_iterations": float(a), "prompts_per_stage": _num(n),
            "memory_tokens": _num(n * a), "throughput_tokens_per_s": t.rate_per_s * t.decode,
        })
    return {
        "workload": workload.name,
        "source": workload.source,
        "kv_capacity_tokens": workload.kv_capacity_tokens,
        "batch_time_linear": {"d0_s": d0, "d_kv_s_per_token": d_kv, "d_new_s_per_token": d_new},
        "load_factor": arr.load_factor,
        "iteration_time_star_s": _num(arr.iteration_time_star_s),
        "memory_star_tokens": _num(arr.memory_star_tokens),
        "memory_use": _num(arr.memory_star_tokens / workload.kv_capacity_tokens),
        "throughput_star_tokens_per_s": arr.throughput_star_tokens_per_s,
        "capacity_scale": arr.capacity_scale,
        "stable": bool(arr.stable) and not too_big,
        "advice": too_big or instability_advice(point),
        "types": rows,
    }


def _lp_report(workload: Workload, args, capacity: bool) -> dict:
    from fluid.lp import solve_lp

    res = solve_lp(
        workload, capacity=capacity, batch_cap=args.batch_cap, token_budget_tokens=args.token_budget,
        tbt_slo_s=args.tbt_slo,
    )
    duals = {k: (v.tolist() if hasattr(v, "tolist") else v) for k, v in res.duals.items()}
    out = {
        "solver": res.solver,
        "objective": res.objective,
        "admitted_rate_per_s": res.admitted_rate_per_s.tolist(),
        "iteration_time_s": res.iteration_time_s,
        "memory_tokens": res.memory_tokens,
        "throughput_tokens_per_s": res.throughput_tokens_per_s,
        "binding": list(res.binding),
        "duals": duals,
        # ∂objective/∂C: the dual of kv_memory (Σ a x ≤ C t) times t
        "objective_per_kv_token": res.duals["kv_memory"] * res.iteration_rate_per_s,
    }
    if capacity:
        out["capacity_scale"] = res.capacity_scale
    else:
        out["shed_rate_per_s"] = res.shed_rate_per_s.tolist()
    return out


def _ode_report(workload: Workload, seconds: float) -> dict:
    from fluid.ode import simulate_fluid

    out = {"horizon_s": seconds}
    for policy in ("wait", "fcfs"):
        try:
            tr = simulate_fluid(workload, seconds, policy=policy)
        except UnstableWorkloadError as err:
            out[policy] = {"skipped": str(err)}
            continue
        out[policy] = {
            "final_memory_tokens": tr.final_memory_tokens,
            "final_iteration_time_s": tr.final_iteration_time_s,
            "final_throughput_tokens_per_s": tr.final_throughput_tokens_per_s,
            "final_queue_prompts": float(tr.queue_prompts[-1]),
            "peak_memory_tokens": float(tr.memory_tokens.max()),
            "mean_throughput_tokens_per_s": float(_time_mean(tr.times_s, tr.throughput_tokens_per_s)),
        }
    return out


def _time_mean(t, y) -> float:
    span = t[-1] - t[0]
    return float(((y[1:] + y[:-1]) / 2 * (t[1:] - t[:-1])).sum() / span) if span > 0 else float(y[-1])


def _fmt(x, digits: int = 6) -> str:
    if x is None:
        return "inf"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, float):
        return f"{x:.{digits}g}"
    return str(x)


def _table(rows: list[list[str]], header: list[str]) -> str:
    return format_table(header, rows)


def _binding_text(binding: list[str], num_types: int) -> str:
    upper = [b for b in binding if b.startswith("admission_upper")]
    rest = [b for b in binding if not b.startswith("admission_upper")]
    if upper:
        rest.append(f"admission_upper ({len(upper)} of {num_types} types: x_j = λ_j)")
    return ", ".join(rest) or "none"


def render_text(report: dict) -> str:
    out = [f"fluid benchmark of {report['workload']} (C = {report['kv_capacity_tokens']} KV tokens, "
           f"rate scale {report['rate_scale']:g})", ""]
    rows = [[r["name"], str(r["prefill_tokens"]), str(r["decode_tokens"]), _fmt(r["rate_per_s"]),
             _fmt(r["footprint_token_iterations"]), _fmt(r["prompts_per_stage"], 4), _fmt(r["memory_tokens"]),
             _fmt(r["throughput_tokens_per_s"])] for r in report["types"]]
    out.append(_table(rows, ["type", "l", "l'", "λ (req/s)", "a (tok·it)", "n* (/stage)", "memory (tok)", "decode tok/s"]))
    out += ["", _table([
        ["load factor L", _fmt(report["load_factor"])],
        ["iteration time ΔT* (s)", _fmt(report["iteration_time_star_s"])],
        ["KV memory M* (tokens)", _fmt(report["memory_star_tokens"])],
        ["memory use M*/C", _fmt(report["memory_use"], 4)],
        ["throughput* (decode tok/s)", _fmt(report["throughput_star_tokens_per_s"])],
        ["capacity scale θ*", _fmt(report["capacity_scale"])],
        ["stable", _fmt(report["stable"])],
    ], ["closed form", "value"])]
    m = len(report["types"])
    for key, title in (("lp", "fluid LP (maximise decode tokens/s)"), ("capacity_lp", "capacity LP (maximise θ, x = θλ)")):
        lp = report.get(key)
        if lp is None:
            continue
        out += ["", f"{title}, solver {lp['solver']}"]
        adm = "admission_upper" if key == "lp" else "admission_scale"
        rows = [[name, _fmt(x), _fmt(d, 4)]
                for name, x, d in zip([r["name"] for r in report["types"]], lp["admitted_rate_per_s"], lp["duals"][adm])]
        out.append(_table(rows, ["type", "admitted x (req/s)", f"dual {adm}"]))
        summary = [["iteration time ΔT (s)", _fmt(lp["iteration_time_s"])], ["KV memory M (tokens)", _fmt(lp["memory_tokens"])],
                   ["throughput (decode tok/s)", _fmt(lp["throughput_tokens_per_s"])]]
        if "capacity_scale" in lp:
            summary.append(["capacity scale θ", _fmt(lp["capacity_scale"])])
        summary.append(["binding", _binding_text(lp["binding"], m)])
        summary += [[f"dual {k}", _fmt(v, 4)] for k, v in lp["duals"].items() if not isinstance(v, list)]
        summary.append(["objective per extra KV token", _fmt(lp["objective_per_kv_token"], 4)])
        out.append(_table(summary, ["", "value"]))
    ode = report.get("ode")
    if ode is not None:
        out += ["", f"fluid ODE from an empty server, {ode['horizon_s']:g} s"]
        rows = []
        for policy in ("wait", "fcfs"):
            r = ode[policy]
            if "skipped" in r:
                rows.append([policy, "skipped: " + r["skipped"][:60], "", "", ""])
            else:
                rows.append([policy, _fmt(r["final_memory_tokens"]), _fmt(r["final_throughput_tokens_per_s"]),
                             _fmt(r["final_queue_prompts"], 4), _fmt(r["peak_memory_tokens"])])
        out.append(_table(rows, ["policy", "final M (tok)", "final decode tok/s", "queue", "peak M (tok)"]))
    if not report["stable"]:
        out += ["", "UNSTABLE: " + report["advice"]]
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from fluid.workload_io import load_workload

    check_number(args.rate_scale, "--rate-scale", minimum=0, strict_minimum=True, unit="factor")
    check_number(args.ode, "--ode", minimum=0, strict_minimum=True, unit="of seconds", allow_none=True)
    workload = load_workload(args.workload, rate_scale=args.rate_scale)
    report = closed_form_report(workload, closed_form_full(workload))
    report["rate_scale"] = args.rate_scale
    if args.lp:
        report["lp"] = _lp_report(workload, args, capacity=False)
    if args.capacity:
        report["capacity_lp"] = _lp_report(workload, args, capacity=True)
    if args.ode is not None:
        report["ode"] = _ode_report(workload, args.ode)
    if args.json:
        print_json(report)
    else:
        print(render_text(report))
    sys.stdout.flush()
    if not report["stable"]:
        raise UnstableWorkloadError(report["advice"])
    return 0
