"""`fluidsched compare WORKLOAD --schedulers a,b,c [--policy P.json]`: several schedulers on the
same arrivals (same seed, fresh copies of the requests), one table.

`--option key=value` knobs go to every scheduler that has that knob (and must exist for at least
one). With `--out DIR`, each run's folder is written to DIR/NAME and the table to DIR/compare.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from fluid.errors import InputError
from runtime.cli_simulate import add_common_arguments, base_config, format_table, load_policy_arg, warn_policy_mismatch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--schedulers", required=True, help="comma-separated scheduler names (wait/nested-wait need --policy)")


def run(args) -> int:
    from dataclasses import replace

    from runtime.results import write_json, write_run_folder
    from runtime.schedulers import scheduler_options
    from runtime.simrun import run_simulation

    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    if not names:
        raise InputError("give at least one scheduler name", field="schedulers")
    policy, document = load_policy_arg(args.policy)
    base = base_config(args, "fcfs")
    options = base.options
    knobs_of = {name: set(scheduler_options(name)) for name in names}  # also rejects unknown names
    unused = sorted(k for k in options if not any(k in knobs for knobs in knobs_of.values()))
    if unused:
        raise InputError(f"no scheduler among {names} has option(s) {unused}", field="option")
    summaries = []
    names_with_policy = [n for n in names if n in ("wait", "nested-wait")]
    for name in names:
        uses_policy = name in ("wait", "nested-wait")
        config = replace(
            base,
            scheduler=name,
            options={k: v for k, v in options.items() if k in knobs_of[name]},
            policy=policy if uses_policy else None,
            policy_document=document if uses_policy else None,
        )
        if uses_policy and name == names_with_policy[0]:
            warn_policy_mismatch(config)
        output = run_simulation(config)
        summaries.append(output.summary)
        if args.out:
            write_run_folder(Path(args.out) / name, output)
    if args.out:
        write_json(Path(args.out) / "compare.json", summaries)
    if args.json:
        json.dump(summaries, sys.stdout, indent=2, default=float)
        print()
    else:
        print(format_table(summaries))
    return 0
