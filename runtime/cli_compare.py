"""`fluidsched compare WORKLOAD --schedulers a,b,c [--policy P.json]`: several schedulers on the
same arrivals (same seed, fresh copies of the requests), the fluid throughput* as a first row.

`--option key=value` knobs go to every scheduler that has that knob (and must exist for at least
one). With `--out DIR`, each run's folder is written to DIR/NAME and the table to DIR/compare.json.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from fluid.errors import InputError
from fluid.cli_json import print_json
from runtime.cli_simulate import add_common_arguments, base_config, format_tables, load_policy_arg, warn_policy_mismatch


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_common_arguments(parser)
    parser.add_argument("--schedulers", required=True, help="comma-separated scheduler names (wait/nested-wait need --policy)")


def run(args) -> int:
    from dataclasses import replace

    from fluid.file_output import atomic_folder, finite_json
    from runtime.progress import RequestProgress, progress_enabled
    from runtime.results import write_json, write_run_folder
    from runtime.schedulers import scheduler_options
    from runtime.simrun import SCHEDULERS_WITH_POLICY, run_simulation

    names = [n.strip() for n in args.schedulers.split(",") if n.strip()]
    if not names:
        raise InputError("give at least one scheduler name", field="schedulers")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"scheduler(s) {', '.join(twice)} named more than once in {args.schedulers!r}; "
                         "each would run the same arrivals twice, so name each once", field="schedulers")
    if args.out:
        from fluid.file_output import check_out_dir

        check_out_dir(args.out)
    policy, document = load_policy_arg(args.policy)
    base = base_config(args, "fcfs")
    options = base.options
    knobs_of = {name: set(scheduler_options(name)) for name in names}  # also rejects unknown names
    unused = sorted(k for k in options if not any(k in knobs for knobs in knobs_of.values()))
    if unused:
        raise InputError(f"no scheduler among {names} has option(s) {unused}", field="option")
    summaries, outputs = [], []
    names_with_policy = [n for n in names if n in SCHEDULERS_WITH_POLICY]
    for name in names:
        uses_policy = name in SCHEDULERS_WITH_POLICY
        config = replace(
            base,
            scheduler=name,
            options={k: v for k, v in options.items() if k in knobs_of[name]},
            policy=policy if uses_policy else None,
            policy_document=document if uses_policy else None,
        )
        if uses_policy and name == names_with_policy[0]:
            warn_policy_mismatch(config)
        with RequestProgress(config.num_requests, name, enabled=progress_enabled(args.quiet)) as progress:
            output = run_simulation(config, progress=progress)
        summaries.append(output.summary)
        outputs.append((name, output))
    fluid_star = fluid_throughput_star(base.workload.scaled(base.rate_scale))
    if args.out:
        # every run folder and compare.json appear together or not at all
        with atomic_folder(args.out) as tmp:
            for name, output in outputs:
                write_run_folder(Path(tmp) / name, output, atomic=False)
            write_json(Path(tmp) / "compare.json", [s.to_dict() for s in summaries])
    if args.json:
        print_json(finite_json({"fluid_throughput_star_tokens_per_s": fluid_star, "summaries": [s.to_dict() for s in summaries]}))
    else:
        print(format_tables(summaries, fluid_star))
        if fluid_star is None:
            print("note: no fluid row: the workload has no stable fluid point within C", file=sys.stderr)
    return 0


def fluid_throughput_star(workload) -> float | None:
    """The fluid benchmark's throughput* (arXiv 2504.11320, the fluid benchmark), or None when the workload has no
    stable fluid point within its memory."""
    from fluid.equilibrium import closed_form
    from fluid.errors import FluidSchedError

    try:
        return closed_form(workload).throughput_star_tokens_per_s
    except FluidSchedError:
        return None
