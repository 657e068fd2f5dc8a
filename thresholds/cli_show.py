"""`fluidsched show POLICY.json`: print a policy file back as tables (validated on reading)."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("policy", help="policy JSON written by `fluidsched solve`")
    parser.add_argument("--json", action="store_true", help="print the canonical JSON instead of tables")


def run(args: argparse.Namespace) -> int:
    from thresholds.policy import load_policy, policy_to_json
    from thresholds.report import policy_text

    policy = load_policy(args.policy, allow_violations=True)
    print(policy_to_json(policy) if args.json else policy_text(policy), end="\n" if not args.json else "")
    return 0
