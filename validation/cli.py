"""`fluidsched`: one command that composes every package.

Each subcommand's body lives in the package it serves; this dispatcher only wires them up, at the
top of the dependency stack. A subcommand module exposes `add_arguments(parser)` and
`run(args) -> int`, and is imported only when its subcommand runs, so `fluidsched fluid` never
imports torch and `fluidsched run` never imports cvxpy.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fluid.errors import FluidSchedError

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

# name -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "fluid": ("fluid.cli", "fluid benchmark of a workload: closed forms, LP, ODE, capacity"),
    "solve": ("thresholds.cli_solve", "derive WAIT / Nested WAIT thresholds and write a policy JSON"),
    "show": ("thresholds.cli_show", "print a policy JSON back"),
    "check": ("thresholds.cli_check", "re-verify a policy's conditions against a workload"),
    "simulate": ("runtime.cli_simulate", "simulate one scheduler on a workload (simulated clock)"),
    "compare": ("runtime.cli_compare", "simulate several schedulers on the same arrivals"),
    "run": ("runtime.gpu.cli_run", "open-loop run on a real Llama model (GPU or CPU)"),
    "calibrate": ("runtime.gpu.cli_calibrate", "measure step times and fit batch-time models"),
    "drift": ("validation.cli_drift", "WAIT under drifting load: adaptive vs static caps vs baselines vs the fluid ODE"),
    "demo": ("validation.demo", "the main job: solve, simulate against baselines, table and figure"),
    "figures": ("paper_figures.cli", "draw the figures from result files"),
    "sweep": ("validation.cli_sweep", "run an experiment: loads x policies x seeds x knobs, locally or on Dask"),
    "report": ("validation.cli_report", "write the markdown report of a sweep's results"),
}


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fluidsched", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == only:
            importlib.import_module(module).add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from fluid.file_output import forget_written

    forget_written()  # "what was kept" counts this command's outputs only
    try:
        return int(importlib.import_module(SUBCOMMANDS[args.command][0]).run(args) or 0)
    except FluidSchedError as err:
        print(f"fluidsched {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        # outputs are written whole or not at all (fluid/file_output.py): say which were completed
        from fluid.file_output import written_paths

        kept = written_paths()
        said = f"kept {', '.join(kept)}" if kept else "nothing was written (no partial output is left behind)"
        print(f"fluidsched {args.command}: interrupted; {said}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # the reader went away (`fluidsched ... | head`): not an error of ours; silence the
        # interpreter's own flush of stdout at exit
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
