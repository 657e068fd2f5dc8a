"""`fluidsched sweep EXPERIMENT.yaml --out DIR [--smoke] [--jobs N | --dask ADDRESS | --engine gpu ...]`.

Runs every point of the experiment (loads × policies × seeds × knobs, and its λ* bisections),
skipping points already in DIR, and writes the tidy table DIR/points.sqlite. Layout of DIR:
`validation/store.py`; experiment files: `docs/validation.md`. `--engine gpu` runs the same grid
points live on the GPU engine instead of the simulator (`validation/gpu_sweep.py`).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

from fluid.errors import InputError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="experiment YAML (see validation/experiments/)")
    parser.add_argument("--out", required=True, help="results folder (created; a rerun skips finished points)")
    parser.add_argument("--smoke", action="store_true", help="run the experiment's tiny `smoke:` version (seconds)")
    parser.add_argument("--jobs", type=int, default=None, help="local worker processes (default: all cores)")
    parser.add_argument("--dask", metavar="ADDRESS", help="run on the Dask distributed scheduler at ADDRESS (tcp://host:8786)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--engine", choices=("sim", "gpu"), default="sim",
                        help="sim: the simulator (default); gpu: the same points run live on the GPU engine, one at a time "
                             "(write them beside the simulated sweep as <experiment>-gpu for the report)")
    parser.add_argument("--model", default=None, help="--engine gpu: model preset (default llama-2-7b; tiny-llama for a CPU smoke run)")
    parser.add_argument("--device", default=None, help="--engine gpu: cuda (default) or cpu")
    parser.add_argument("--dtype", default=None, help="--engine gpu: bf16, fp16, fp32 or auto (default: bf16 on CUDA, fp32 on CPU)")


def make_backend(args):
    from validation.runner import DaskBackend, LocalBackend

    if args.jobs is not None and args.jobs < 1:
        raise InputError(f"--jobs must be a positive integer, got {args.jobs}", field="jobs")
    if args.dask:
        try:
            import dask.distributed  # noqa: F401
        except ImportError:
            raise InputError("--dask needs Dask distributed: pip install -e '.[sweep]'", field="dask") from None
        try:
            return DaskBackend(args.dask)
        except (OSError, TimeoutError) as err:
            raise InputError(f"cannot reach a Dask scheduler at {args.dask!r} ({err}); start one with `dask scheduler`", field="dask") from None
    return LocalBackend(args.jobs)


def _check_out(out: Path, experiment_name: str, engine: str = "sim") -> None:
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r} is a file; give a folder", field="out")
    meta = out / "sweep.json"
    if meta.is_file():
        recorded = json.loads(meta.read_text(encoding="utf-8"))
        previous = recorded.get("experiment")
        if previous != experiment_name:
            raise InputError(f"{str(out)!r} holds results of experiment {previous!r}, not {experiment_name!r}; "
                             f"give another --out", field="out")
        if recorded.get("engine", "sim") != engine:
            # a folder holds one executor's points: measured and simulated results of the same
            # ids must never mix (the report compares them folder against folder)
            raise InputError(f"{str(out)!r} holds {recorded.get('engine', 'sim')} results, and this sweep runs on the {engine} "
                             f"engine; give another --out (GPU results go beside the simulated ones as <experiment>-gpu)", field="out")


def machine_description() -> dict:
    """Where the sweep ran, recorded next to its numbers."""
    import os
    import platform

    import numpy

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "numpy": numpy.__version__,
            "platform": platform.platform()}


def run(args) -> int:
    from runtime.results import code_version
    from validation.experiment import load_experiment
    from validation.runner import run_sweep

    engine = getattr(args, "engine", "sim")
    gpu_only = [f"--{k}" for k in ("model", "device", "dtype") if getattr(args, k, None) is not None]
    if engine != "gpu" and gpu_only:
        raise InputError(f"{', '.join(gpu_only)} apply to --engine gpu only; add --engine gpu or drop them", field="engine")
    if engine == "gpu" and (args.jobs is not None or args.dask):
        raise InputError("--engine gpu runs its points one at a time on one device; drop --jobs / --dask", field="engine")
    experiment = load_experiment(args.experiment, smoke=args.smoke)
    out = Path(args.out)
    _check_out(out, experiment.name, engine)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise InputError(f"cannot create the results folder {str(out)!r}: {err.strerror or err}", field="out") from None
    shutil.copyfile(args.experiment, out / "experiment.yaml")
    flags = (["--smoke"] if args.smoke else []) + (["--engine", "gpu", "--model", args.model or "llama-2-7b", "--device", args.device or "cuda"]
                                                  + (["--dtype", args.dtype] if args.dtype else []) if engine == "gpu" else [])
    command = "fluidsched sweep " + " ".join([Path(args.experiment).as_posix(), "--out", out.as_posix()] + flags)
    # every run of the command on this folder is recorded: a resumed sweep may span code versions
    previous = json.loads((out / "sweep.json").read_text(encoding="utf-8")) if (out / "sweep.json").is_file() else {}
    this_run = {"code_version": code_version(), "machine": machine_description(),
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    meta = {"experiment": experiment.name, "smoke": args.smoke, "engine": engine, "command": command, **this_run,
            "runs": previous.get("runs", []) + [this_run]}
    if engine == "gpu":
        return _run_gpu(args, experiment, out, meta, previous)
    (out / "sweep.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    backend = make_backend(args)
    t0 = time.perf_counter()
    try:
        outcome = run_sweep(experiment, out, backend, quiet=args.quiet)
    except KeyboardInterrupt:
        backend.close(wait=False)  # points still running are dropped; their folders were never renamed into place
        print(f"fluidsched sweep: interrupted; finished points are kept in {out} (rerun the same command to go on)", file=sys.stderr)
        return 130
    backend.close()
    print(f"{experiment.name}: {outcome.ran} points run, {outcome.skipped} already done, "
          f"{len(outcome.errors)} without a result, {len(outcome.bisection)} λ* bisections, "
          f"on {backend.name} in {time.perf_counter() - t0:.1f} s -> {out / 'points.sqlite'}")
    for line in outcome.errors[:10]:
        print(f"note: {line}", file=sys.stderr)
    for line in outcome.crashes:
        print(f"error: {line}", file=sys.stderr)
    return 1 if outcome.crashes else 0


def _run_gpu(args, experiment, out: Path, meta: dict, previous: dict) -> int:
    from validation.gpu_sweep import run_gpu_sweep

    model, device = args.model or "llama-2-7b", args.device or "cuda"
    for key in ("device", "model", "dtype", "versions", "host"):  # kept from an earlier run until this one builds the engine
        if key in previous:
            meta[key] = previous[key]
    (out / "sweep.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    t0 = time.perf_counter()

    def record(outcome) -> None:  # where the points are measured, written before the first one runs
        meta["runs"][-1].update(device=outcome.device, versions=outcome.versions, host=outcome.host,
                                setup_s=round(outcome.setup_s, 2))
        meta.update(device=outcome.device, model=model, dtype=args.dtype or "auto", versions=outcome.versions, host=outcome.host)
        (out / "sweep.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")

    try:
        outcome = run_gpu_sweep(experiment, out, model=model, device=device, dtype=args.dtype or "auto", quiet=args.quiet, on_built=record)
    except KeyboardInterrupt:
        print(f"fluidsched sweep: interrupted; finished points are kept in {out} (rerun the same command to go on)", file=sys.stderr)
        return 130
    if outcome.device:
        meta["runs"][-1].update(warmup_s=round(outcome.warmup_s, 2), points_run=outcome.ran)
        (out / "sweep.json").write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
    print(f"{experiment.name} on {outcome.device or 'the GPU engine'}: {outcome.ran} points run, {outcome.skipped} already done, "
          f"{len(outcome.errors)} without a result in {time.perf_counter() - t0:.1f} s -> {out / 'points.sqlite'}")
    if outcome.skipped_bisections:
        print(f"note: the experiment's {outcome.skipped_bisections} λ* bisections are not run on the GPU", file=sys.stderr)
    for line in outcome.errors[:10]:
        print(f"note: {line}", file=sys.stderr)
    return 0
