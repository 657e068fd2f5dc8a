"""`fluidsched solve WORKLOAD -o POLICY.json`: WAIT / Nested WAIT thresholds written as a policy file.

Exit codes: 0 written; 2 bad input; 3 unstable or over-memory workload, or (batch-cap recipe)
thresholds that break their conditions without `--allow-violations`.
"""

from __future__ import annotations

import argparse
import sys

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import InputError, UnstableWorkloadError


def _segments(text: str):
    if text in ("auto", "types"):
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, 'auto' or 'types', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of segments, got {value}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("workload", help="workload file (YAML/JSON) or preset name")
    parser.add_argument("-o", "--output", required=True, help="policy JSON to write")
    parser.add_argument("--policy", choices=("wait", "nested-wait"), default="wait")
    parser.add_argument("--service-rule", choices=("cohort", "continuous"), default="cohort",
                        help="cohort: each stage serves up to its threshold (the paper's rule); continuous: "
                             "every resident decode runs each iteration, thresholds gate admission")
    parser.add_argument("--slack", type=float, default=0.05,
                        help="target utilisation ρ = 1 − slack: thresholds solved at rates λ/ρ (default 0.05)")
    parser.add_argument("--segments", type=_segments, default="types",
                        help="Nested WAIT: 'types' (one segment per distinct decode length, default), a number L, or 'auto'")
    parser.add_argument("--segment-rule", choices=("equal-width", "quantile"), default="equal-width",
                        help="Nested WAIT with a number L: equal-width or quantile segments")
    parser.add_argument("--eta", type=float, default=0.05, help="Nested WAIT: q_k = min(p_k + η, 0.99)")
    parser.add_argument("--delta", type=float, default=0.01, help="Nested WAIT: allowed overflow probability δ")
    parser.add_argument("--horizon-s", type=float, default=3600.0, help="Nested WAIT: horizon of the guarantee (s)")
    parser.add_argument("--prefill", choices=("representative", "per-class"), default="representative",
                        help="Nested WAIT: one instance at the rate-weighted mean prefill, or one per prefill length")
    parser.add_argument("--batch-cap", type=int, default=None,
                        help="use the batch-cap recipe with cap B instead of the fluid point (conditions reported)")
    parser.add_argument("--max-wait-s", type=float, default=None,
                        help="drain rule: admit a partial cohort after this wait (default 20 × ΔT(n))")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate of the workload")
    parser.add_argument("--allow-violations", action="store_true",
                        help="write the file even if the thresholds break a condition (batch-cap recipe)")
    add_json_argument(parser, "print {output, policy, broken_conditions} as JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from fluid.workload_io import load_workload
    from thresholds.build import nested_policy, wait_policy
    from thresholds.policy import save_policy
    from thresholds.report import policy_text

    workload = load_workload(args.workload, rate_scale=args.rate_scale)
    common = dict(service_rule=args.service_rule, max_wait_s=args.max_wait_s,
                  allow_violations=args.allow_violations, rate_scale=args.rate_scale)
    if args.policy == "wait":
        from thresholds.wait import solve_wait, solve_wait_batch_cap

        sol = solve_wait_batch_cap(workload, args.batch_cap, slack=args.slack) if args.batch_cap is not None \
            else solve_wait(workload, slack=args.slack)
        policy = wait_policy(workload, sol, **common)
        if sol.mode == "fluid" and sol.slack > 0:
            _note_leaner_slack(workload, sol)
    else:
        from thresholds.nested import NestedOptions, solve_nested

        options = NestedOptions(segments=None if args.segments == "types" else args.segments,
                                segment_rule=args.segment_rule, slack=args.slack, eta=args.eta, delta=args.delta,
                                horizon_s=args.horizon_s, batch_cap=args.batch_cap,
                                prefill_mode=args.prefill.replace("-", "_"))
        sol = solve_nested(workload, options)
        policy = nested_policy(workload, sol, **common)
    if not args.json:
        print(policy_text(policy))
    broken = [c for c in policy.guarantees.conditions if not c.holds]
    for c in broken:
        print(f"warning: condition {c.name} is broken: {c.lhs:.6g} vs {c.rhs:.6g}", file=sys.stderr)
    if broken and not args.allow_violations:
        raise UnstableWorkloadError(
            f"the thresholds break {len(broken)} condition(s) ({', '.join(c.name for c in broken)}); "
            f"nothing written. Use the fluid point (drop --batch-cap), change the cap, or pass --allow-violations."
        )
    save_policy(policy, args.output)
    if args.json:
        import json

        from thresholds.policy import policy_to_json

        print_json({"output": args.output, "policy": json.loads(policy_to_json(policy)),
                    "broken_conditions": [c.to_dict() for c in broken]})
    else:
        print(f"\nwrote {args.output}")
    return 0


# Thresholds at slack s are the fluid point at rates λ/(1 − s); near the load limit that inflates
# them (and the memory and the cohort wait) far beyond what the conditions need. Measured on an
# H200 at load factor 0.9 (docs/benchmarks-gpu.md): slack 0.05 asked for (15, 15) and 67,200
# tokens, slack 0 for (8, 8) and 35,840, and slack 0 carried 9 % more tokens/s with lower TTFT.
LEANER_MEMORY_RATIO = 1.5


def _note_leaner_slack(workload, sol) -> None:
    from fluid.errors import FluidSchedError
    from thresholds.wait import solve_wait

    try:
        lean = solve_wait(workload, slack=0.0)
    except FluidSchedError:
        return
    if lean.holds and sol.memory_policy_tokens >= LEANER_MEMORY_RATIO * lean.memory_policy_tokens:
        print(
            f"note: slack {sol.slack:g} asks for thresholds {tuple(sol.thresholds)} and M^π = {sol.memory_policy_tokens:,.0f} tokens; "
            f"slack 0 meets every condition with {tuple(lean.thresholds)} and {lean.memory_policy_tokens:,.0f} tokens. "
            f"Near the load limit the smaller thresholds usually serve more with less waiting; pass --slack 0 to use them.",
            file=sys.stderr,
        )
