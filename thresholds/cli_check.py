"""`fluidsched check POLICY.json [WORKLOAD] [--rate-scale X]`: do the thresholds still hold?

Re-verifies every condition of the policy against the workload (today's rates and lengths, its
batch time and C); without WORKLOAD, against the policy's own rates times `--rate-scale`.
Exit 0 if all hold, 3 if any break, 2 on bad input.
"""

from __future__ import annotations

import argparse
import dataclasses

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import EXIT_UNSTABLE


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="policy JSON written by `fluidsched solve`")
    parser.add_argument("workload", nargs="?", default=None, help="workload file or preset (default: the policy's own)")
    parser.add_argument("--rate-scale", type=float, default=1.0, help="multiply every rate before checking")
    add_json_argument(parser, "print {policy, kind, against, conditions, all_hold} as JSON instead of tables")


def _own_workload(policy, rate_scale: float):
    """WAIT: rebuild the workload from the classes; the batch time is the linear form solved with."""
    from fluid.batch_time import Linear3BatchTime
    from fluid.workload import RequestType, Workload
    from thresholds.policy_parse import linear_time_of

    lin = linear_time_of(policy)
    types = tuple(RequestType(c.name, c.prefill, c.decode, c.rate_per_s) for c in policy.classes)
    w = Workload(policy.workload.name, policy.kv_capacity_tokens,
                 Linear3BatchTime(lin.d0_s, lin.d_kv_s_per_token, lin.d_new_s_per_token), types)
    return w.scaled(rate_scale)


def run(args: argparse.Namespace) -> int:
    from fluid.errors import InputError
    from thresholds.policy import NestedWaitPolicy, WorkloadRef, load_policy
    from thresholds.policy_parse import nested_file_conditions
    from thresholds.report import conditions_text
    from thresholds.verify import verify_policy

    if not (args.rate_scale > 0):
        raise InputError(f"rate scale must be positive, got {args.rate_scale!r}", field="--rate-scale")
    policy = load_policy(args.policy, allow_violations=True)
    if args.workload is not None:
        from fluid.workload_io import load_workload

        workload = load_workload(args.workload, rate_scale=args.rate_scale)
        conditions = verify_policy(policy, workload)
        against = f"workload '{workload.name}'"
    elif isinstance(policy, NestedWaitPolicy):
        ref = policy.workload
        scaled = WorkloadRef(ref.name, ref.content_sha256, tuple((n, r * args.rate_scale) for n, r in ref.rates_per_s))
        conditions = nested_file_conditions(dataclasses.replace(policy, workload=scaled))
        against = f"the policy's own rates × {args.rate_scale:g}"
    else:
        conditions = verify_policy(policy, _own_workload(policy, args.rate_scale))
        against = f"the policy's own rates × {args.rate_scale:g}"
    broken = [c for c in conditions if not c.holds]
    if args.json:
        print_json({"policy": args.policy, "kind": policy.kind, "against": against,
                    "conditions": [c.to_dict() for c in conditions], "all_hold": not broken})
        return EXIT_UNSTABLE if broken else 0
    print(f"checking {args.policy} ({policy.kind}) against {against}")
    print(conditions_text(conditions))
    if broken:
        print(f"\n{len(broken)} condition(s) break: {', '.join(c.name for c in broken)}")
        return EXIT_UNSTABLE
    print("\nall conditions hold")
    return 0
