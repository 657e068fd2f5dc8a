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
    parser.add_argument("--service-rule", choices=("cohort", "continuous", "capped"), default=None,
                        help="capped (default; with --batch-cap the default is cohort, the recipe's rule): the rule "
                             "that gives a working policy on the paper's own workloads, docs/capped-rule.md; cohort: each stage serves up to its threshold (the paper's rule); continuous: "
                             "every resident decode runs each iteration, thresholds gate admission; capped: real "
                             "thresholds enforced by resident caps, chunked prefill, pause when no block is free "
                             "(docs/capped-rule.md)")
    parser.add_argument("--slack", type=float, default=None,
                        help="target utilisation ρ = 1 − slack: thresholds solved at rates λ/ρ (default: chosen "
                             "automatically, min(0.05, (1 − L)/2) or 0, see docs/capped-rule.md)")
    parser.add_argument("--segments", type=_segments, default="types",
                        help="Nested WAIT: 'types' (one segment per distinct decode length, default), a number L, or 'auto'")
    parser.add_argument("--segment-rule", choices=("equal-width", "quantile"), default="equal-width",
                        help="Nested WAIT with a number L: equal-width or quantile segments")
    parser.add_argument("--eta", type=float, default=None,
                        help="Nested WAIT: q_k = min(p_k + η, 0.99) (default 0.05; 0 for the capped rule)")
    parser.add_argument("--delta", type=float, default=0.01, help="Nested WAIT: allowed overflow probability δ")
    parser.add_argument("--horizon-s", type=float, default=3600.0, help="Nested WAIT: horizon of the guarantee (s)")
    parser.add_argument("--prefill", choices=("representative", "per-class"), default="representative",
                        help="Nested WAIT: one instance at the rate-weighted mean prefill, or one per prefill length")
    parser.add_argument("--batch-cap", type=int, default=None,
                        help="use the batch-cap recipe with cap B instead of the fluid point (conditions reported)")
    parser.add_argument("--memory-bound", choices=("expected", "worst", "theorem"), default="expected",
                        help="which memory must fit C. Capped rule: the expected resident KV times 1 + margin "
                             "(default), the worst case (every resident at full length), or the theorem's M^π + "
                             "buffer (Nested WAIT). Nested WAIT, cohort rule: expected = M^π (default), theorem = "
                             "M^π + the safety buffer of arXiv 2504.11320 §4")
    parser.add_argument("--memory-margin", type=float, default=None,
                        help="capped rule, --memory-bound expected: margin over the expected KV (default 0.1, "
                             "shrunk to fit C)")
    parser.add_argument("--prefill-chunk", type=int, default=None,
                        help="capped rule: per-request prefill chunk in tokens (default: derived from the fluid point)")
    parser.add_argument("--tune", action="store_true",
                        help="capped rule: pick slack, prefill chunk (and Nested WAIT segments and η) with the simulator: "
                             "lowest mean latency at ≥ 0.99 of throughput* and ≤ 1%% overflow (docs/capped-rule.md)")
    parser.add_argument("--tune-requests", type=int, default=2000, help="requests per tuning simulation (default 2000)")
    parser.add_argument("--max-wait-s", type=float, default=None,
                        help="drain rule: admit a partial cohort after this wait (default 20 × ΔT(n))")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate of the workload")
    parser.add_argument("--adaptive", action="store_true",
                        help="capped rule: re-solve the caps online from the measured rates (docs/adaptive.md); "
                             "the scheduler that runs the file is then wait-adaptive / nested-wait-adaptive")
    parser.add_argument("--adaptive-window-s", type=float, default=None, help="--adaptive: rate window (s), default 60")
    parser.add_argument("--adaptive-period-s", type=float, default=None, help="--adaptive: re-solve period (s), default 5")
    parser.add_argument("--adaptive-hysteresis", type=float, default=None,
                        help="--adaptive: least relative cap change applied, default 0.05")
    parser.add_argument("--adaptive-backlog-wait-s", type=float, default=None,
                        help="--adaptive: a request waiting this long behind a binding cap is a backlog: "
                             "re-solve at once for the largest rate allowed (s), default 0.25")
    parser.add_argument("--adaptive-headroom", type=float, default=None,
                        help="--adaptive: caps are solved for the estimated rate × (1 + headroom), default 0.25")
    parser.add_argument("--allow-violations", action="store_true",
                        help="write the file even if the thresholds break a condition (batch-cap recipe)")
    add_json_argument(parser, "print {output, policy, broken_conditions} as JSON instead of tables")


def _memory(sol) -> float:
    memory = getattr(sol, "memory", None)
    if memory is not None:
        return memory.required_tokens
    return getattr(sol, "memory_required_tokens", None) or sol.memory_policy_tokens


def _adaptive_settings(args):
    """The `capped.adaptive` block the flags ask for (None without --adaptive)."""
    given = {"window_s": args.adaptive_window_s, "period_s": args.adaptive_period_s,
             "hysteresis": args.adaptive_hysteresis, "headroom": args.adaptive_headroom,
             "backlog_wait_s": args.adaptive_backlog_wait_s}
    if not args.adaptive:
        named = [f"--adaptive-{k.replace('_', '-')}" for k, v in given.items() if v is not None]
        if named:
            raise InputError(f"{', '.join(named)} only apply with --adaptive", field="adaptive")
        return None
    if args.service_rule != "capped":
        raise InputError("--adaptive re-solves the capped rule's caps: add --service-rule capped", field="adaptive")
    from thresholds.adaptive import AdaptiveSettings

    # the re-solve keeps the user's margin, or solve's default rule (None) when none was given
    return AdaptiveSettings(**{k: v for k, v in given.items() if v is not None}, memory_margin=args.memory_margin)


DEFAULT_SERVICE_RULE = "capped"


def default_service_rule(args) -> str:
    """The rule when `--service-rule` is not given: capped, the one whose policies carry ≥ 0.98 of
    throughput* on the presets (docs/benchmarks-thresholds.md); the batch-cap recipe keeps the
    cohort rule it was written for (the capped rule derives its own caps)."""
    return "cohort" if args.batch_cap is not None else DEFAULT_SERVICE_RULE


def _solve(args, workload):
    """(policy, slack, why that slack) for the parsed `solve` arguments."""
    if args.service_rule is None:
        args = argparse.Namespace(**{**vars(args), "service_rule": default_service_rule(args)})
    adaptive = _adaptive_settings(args)
    policy, slack, reason = _solve_rule(args, workload)
    if adaptive is not None:
        from dataclasses import replace

        policy = replace(policy, capped=replace(policy.capped, adaptive=adaptive))
    return policy, slack, reason


def _solve_rule(args, workload):
    """(policy, slack choice text) for the arguments."""
    from fluid.equilibrium import closed_form
    from thresholds import build
    from thresholds.slack import choose_slack

    common = dict(max_wait_s=args.max_wait_s, allow_violations=args.allow_violations, rate_scale=args.rate_scale)
    capped = args.service_rule == "capped"
    if capped and args.batch_cap is not None:
        raise InputError("the capped rule derives its caps from the fluid point; drop --batch-cap", field="batch_cap")
    if args.policy == "wait":
        from thresholds.wait import solve_wait, solve_wait_batch_cap

        if capped:
            from thresholds.capped_solve import solve_wait_capped

            def at(slack):
                return solve_wait_capped(workload, slack=slack, memory_bound=args.memory_bound,
                                         memory_margin=args.memory_margin, prefill_chunk_tokens=args.prefill_chunk)
        elif args.batch_cap is not None:
            def at(slack):
                return solve_wait_batch_cap(workload, args.batch_cap, slack=slack)
        else:
            def at(slack):
                return solve_wait(workload, slack=slack)
    else:
        from thresholds.nested import NestedOptions, solve_nested

        def options_at(slack):
            return NestedOptions(segments=None if args.segments == "types" else args.segments,
                                 segment_rule=args.segment_rule, slack=slack, delta=args.delta,
                                 eta=args.eta if args.eta is not None else (0.0 if capped else 0.05),
                                 horizon_s=args.horizon_s, batch_cap=args.batch_cap,
                                 prefill_mode=args.prefill.replace("-", "_"), memory_bound=args.memory_bound,
                                 memory_margin=args.memory_margin, prefill_chunk_tokens=args.prefill_chunk)

        if capped:
            from thresholds.capped_solve import solve_nested_capped_auto

            def at(slack):
                return solve_nested_capped_auto(workload, options_at(slack))
        else:
            if args.memory_bound == "worst":
                raise InputError("the cohort rule has no finite worst case for Nested WAIT (entries to a segment are "
                                 "random); choose --memory-bound expected (M^π) or theorem (M^π + buffer)",
                                 field="memory_bound")

            def at(slack):
                return solve_nested(workload, options_at(slack))
    if args.tune:
        if not capped:
            raise InputError("--tune tunes the capped rule: add --service-rule capped", field="tune")
        from thresholds.tune import tune

        best, trials = tune(workload, None if args.policy == "wait" else options_at(0.0), requests=args.tune_requests,
                            memory_bound=args.memory_bound, memory_margin=args.memory_margin)
        for t in trials:
            print(f"tune: {'*' if t is best else ' '} {t.label}: {t.throughput_ratio:.3f} of throughput*, mean latency "
                  f"{t.mean_latency_s:.3f} s, overflow {t.overflow_rate:.2%}, evictions {t.evictions}", file=sys.stderr)
        sol, slack = best.solution, best.solution.slack
        reason = f"tuned ({best.label}{'' if best.admissible else '; no candidate met the targets: the highest throughput'})"
        if args.policy != "wait":
            tuned = best.options
            options_at = lambda _slack: tuned  # noqa: E731
    elif args.slack is not None or args.batch_cap is not None:
        slack = 0.0 if args.slack is None else args.slack
        sol, reason = at(slack), ("given (--slack)" if args.slack is not None else "0 (batch-cap recipe)")
    else:
        load = closed_form(workload).load_factor
        if load >= 1:
            from thresholds.wait import require_fluid_stable

            require_fluid_stable(workload, closed_form(workload))
        choice = choose_slack(at, _memory, load)
        sol, slack, reason = choice.solution, choice.slack, choice.reason
    rule = "given" if args.slack is not None and not args.tune else reason
    if args.policy == "wait":
        if capped:
            return build.wait_capped_policy(workload, sol, slack_rule=rule, **common), slack, reason
        return build.wait_policy(workload, sol, service_rule=args.service_rule, slack_rule=rule, **common), slack, reason
    if capped:
        return build.nested_capped_policy(workload, sol, options_at(slack), slack_rule=rule, **common), slack, reason
    return build.nested_policy(workload, sol, service_rule=args.service_rule, slack_rule=rule, **common), slack, reason


def _capped_hint(args, workload) -> str:
    """' …--service-rule capped gives a policy here…' when it does (the cohort rule needs whole prompts per stage)."""
    from fluid.errors import FluidSchedError

    try:
        _solve(argparse.Namespace(**{**vars(args), "service_rule": "capped", "batch_cap": None, "tune": False}), workload)
    except FluidSchedError:
        return ""
    return (" The capped rule gives a policy here (real thresholds under a resident cap, docs/capped-rule.md): "
            "add --service-rule capped.")


def run(args: argparse.Namespace) -> int:
    from fluid.workload_io import load_workload
    from thresholds.policy import save_policy
    from thresholds.report import policy_text

    workload = load_workload(args.workload, rate_scale=args.rate_scale)
    if args.service_rule is None:
        args.service_rule = default_service_rule(args)
        print(f"service rule {args.service_rule} (default{'' if args.batch_cap is None else ' with --batch-cap'}; "
              f"--service-rule cohort for the paper's rule)", file=sys.stderr)
    try:
        policy, slack, reason = _solve(args, workload)
    except UnstableWorkloadError as err:
        if args.service_rule == "capped" or args.batch_cap is not None:
            raise
        raise UnstableWorkloadError(str(err) + _capped_hint(args, workload)) from None
    if not args.json:
        print(policy_text(policy))
    if args.tune:
        print(f"slack {slack:g} {reason}", file=sys.stderr)
    elif args.slack is None and args.batch_cap is None:
        print(f"slack {slack:g} chosen automatically: {reason}", file=sys.stderr)
    if args.service_rule == "capped" and args.policy == "nested-wait" and args.segments == "types" and not args.tune:
        print(f"segments: L = {len(policy.segments)}, one per decode length (the capped rule's resident cap and "
              f"memory do not depend on L; the look-ahead's expected length given the stage is exact only here)",
              file=sys.stderr)
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
