"""`fluidsched demo [--out DIR] [--requests N]`: the README's main job, end to end.

1. Load the `default` workload preset and its fluid benchmark (closed form, arXiv 2504.11320).
2. Solve a WAIT policy with `thresholds` (the paper's cohort rule; if no integer thresholds fit
   in memory, the authors' batch-cap recipe with the continuous service rule) and a Nested WAIT
   policy (skipped, with the reason, when none fits).
3. Simulate them and the baselines (vLLM v0 and v1 style, Sarathi-Serve, Orca, FCFS) on the
   same arrivals.
4. Print one table with the fluid throughput* next to them; write the run folders, the policies,
   `demo.json` and the comparison figure (`paper_figures/demo_comparison.py`) under `--out`.
5. Sweep the load (`validation/experiments/demo.yaml`: WAIT and the main baselines at 0.5 to 1.15
   of the fluid capacity θ*) on local cores with the sweep runner, print each policy's highest
   sustained load, and draw throughput and latency against load with θ* marked
   (`paper_figures/demo_load.py`) into `--out/load-sweep/figures/`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from fluid.cli_json import add_json_argument, print_json
from fluid.errors import FluidSchedError, UnstableWorkloadError

BASELINES = ("vllm-v0", "vllm-v1", "sarathi", "orca", "fcfs")
PRESET = "default"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    parser.add_argument("--requests", type=int, default=3000, help="requests per scheduler (default 3000)")
    parser.add_argument("--seed", type=int, default=0, help="arrival seed (default 0)")
    parser.add_argument("--workload", default=PRESET, help=f"workload file or preset (default {PRESET})")
    parser.add_argument("--no-figure", action="store_true", help="skip the PNG figures")
    parser.add_argument("--no-sweep", action="store_true", help="skip the load sweep (step 5)")
    parser.add_argument("--sweep-requests", type=int, default=None, help="requests per load-sweep point (default: the experiment's 2000)")
    parser.add_argument("--jobs", type=int, default=None, help="worker processes for the load sweep (default: all cores)")
    add_json_argument(parser, "print demo.json's object (fluid numbers, summaries, notes) instead of the tables")


@dataclass
class SolvedPolicy:
    scheduler: str  # "wait" or "nested-wait"
    document: dict  # the policy JSON
    how: str  # how it was obtained, for the report


def solve_policies(workload) -> tuple[list[SolvedPolicy], list[str]]:
    """WAIT and Nested WAIT policies for `workload` via `thresholds`; notes say what was skipped."""
    from thresholds.build import nested_policy, wait_policy
    from thresholds.nested import NestedOptions, solve_nested
    from thresholds.wait import solve_wait, solve_wait_batch_cap
    from validation.policies import fluid_batch_size

    solved, notes = [], []
    try:
        doc = wait_policy(workload, solve_wait(workload), service_rule="cohort").to_dict()
        solved.append(SolvedPolicy("wait", doc, "solve_wait (cohort rule)"))
    except UnstableWorkloadError as err:
        cap = fluid_batch_size(workload)
        notes.append(f"cohort WAIT: {err}")
        doc = wait_policy(workload, solve_wait_batch_cap(workload, cap), service_rule="continuous").to_dict()
        solved.append(SolvedPolicy("wait", doc, f"solve_wait_batch_cap(B={cap}), continuous rule"))
    for options, how in ((NestedOptions(), "solve_nested"), (NestedOptions(segments="auto"), "solve_nested(segments=auto)")):
        try:
            doc = nested_policy(workload, solve_nested(workload, options)).to_dict()
            solved.append(SolvedPolicy("nested-wait", doc, how))
            break
        except FluidSchedError as err:
            notes.append(f"{how}: {err}")
    else:
        notes.append("nested-wait skipped: no Nested WAIT policy fits this workload")
    return solved, notes


def run_demo(workload_spec: str = PRESET, *, num_requests: int = 3000, seed: int = 0) -> dict:
    """Solve, simulate every scheduler on the same arrivals; returns the results (nothing written)."""
    from fluid.equilibrium import closed_form
    from fluid.workload_io import load_workload
    from runtime.policy_file import policy_from_dict
    from runtime.schedulers import available_schedulers
    from runtime.simrun import SimConfig, run_simulation

    workload = load_workload(workload_spec)
    point = closed_form(workload)
    policies, notes = solve_policies(workload)
    available = set(available_schedulers())
    runs = {}
    for solved in policies:
        if solved.scheduler not in available:
            notes.append(f"{solved.scheduler} skipped: scheduler not available")
            continue
        policy = policy_from_dict(solved.document, source=f"{solved.scheduler} policy ({solved.how})")
        config = SimConfig(workload, solved.scheduler, num_requests, seed, policy=policy, policy_document=solved.document)
        runs[solved.scheduler] = run_simulation(config)
        runs[solved.scheduler].extra["how"] = solved.how
    for name in BASELINES:
        if name not in available:
            notes.append(f"{name} skipped: scheduler not available")
            continue
        runs[name] = run_simulation(SimConfig(workload, name, num_requests, seed))
    return {"workload": workload, "fluid": point, "runs": runs, "notes": notes}


def write_demo(out_dir: str | Path, demo: dict, *, figure: bool = True) -> Path:
    """Run folders per scheduler, `demo.json` (table + fluid numbers + notes), the figure."""
    from fluid.file_output import atomic_folder
    from runtime.results import write_json, write_run_folder

    with atomic_folder(out_dir) as tmp:  # the whole folder appears at once, or not at all
        for name, run in demo["runs"].items():
            write_run_folder(tmp / name, run, atomic=False)
        write_json(tmp / "demo.json", demo_document(demo))
        if figure:
            from paper_figures.demo_comparison import draw_demo_comparison

            draw_demo_comparison(tmp / "demo.json", tmp / "demo_comparison.png")
    return Path(out_dir)


def demo_document(demo: dict) -> dict:
    """`demo.json` (and `demo --json`): the fluid numbers, every run's summary, the notes."""
    point = demo["fluid"]
    return {
        "workload": demo["workload"].name,
        "fluid": {
            "throughput_star_tokens_per_s": point.throughput_star_tokens_per_s,
            "memory_star_tokens": point.memory_star_tokens,
            "iteration_time_star_s": point.iteration_time_star_s,
            "load_factor": point.load_factor,
            "kv_capacity_tokens": point.kv_capacity_tokens,
        },
        "summaries": [run.summary.to_dict() for run in demo["runs"].values()],
        "notes": demo["notes"],
    }


DEMO_EXPERIMENT = Path(__file__).resolve().parent / "experiments" / "demo.yaml"


def run_load_sweep(out_dir: str | Path, *, workload_spec: str = PRESET, requests: int | None = None, seed: int = 0,
                   jobs: int | None = None, figure: bool = True, smoke: bool = False) -> dict:
    """The load sweep of step 5 into `out_dir` (a sweep folder): {policy: highest sustained load}."""
    import dataclasses
    import shutil

    from paper_figures.results import read_table
    from validation.bisection import passes
    from validation.experiment import BisectSpec, WorkloadRef, load_experiment
    from validation.runner import LocalBackend, run_sweep

    experiment = load_experiment(DEMO_EXPERIMENT, smoke=smoke)
    changes = {"seeds": (seed,)}
    if requests is not None:
        changes["requests"] = requests
    if workload_spec != PRESET:
        changes["workloads"] = (WorkloadRef(label=Path(workload_spec).stem, workload=workload_spec),)
    experiment = dataclasses.replace(experiment, **changes)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_EXPERIMENT, out / "experiment.yaml")
    (out / "sweep.json").write_text(json.dumps({"experiment": "demo", "smoke": smoke, "command": "fluidsched demo"}) + "\n", encoding="utf-8")
    backend = LocalBackend(jobs)
    try:
        run_sweep(experiment, out, backend, quiet=True)
    finally:
        backend.close()
    criterion = BisectSpec(policies=(), workloads=())  # the `stable` criterion with its default tolerances
    sustained: dict[str, float | None] = {}
    for row in sorted(read_table(out), key=lambda r: r["load"]):
        result = {"status": row["status"], "error": row["error"], "summary": row, "derived": row}
        sustained.setdefault(row["policy"], None)
        if passes(result, criterion)[0]:
            sustained[row["policy"]] = row["load"]
    if figure:
        from paper_figures.demo_load import draw

        draw(out, out / "figures" / "demo_load.png")
    return sustained


def run(args) -> int:
    from runtime.cli_simulate import format_serving_table, format_table

    from fluid.file_output import check_out_dir

    t0 = time.perf_counter()
    check_out_dir(args.out)  # before the work: a bad --out costs nothing
    demo = run_demo(args.workload, num_requests=args.requests, seed=args.seed)
    out = write_demo(args.out, demo, figure=not args.no_figure)
    if args.json:
        for note in demo["notes"]:
            print(f"note: {note}", file=sys.stderr)
        document = demo_document(demo)
        if not args.no_sweep:
            sustained = run_load_sweep(out / "load-sweep", workload_spec=args.workload, requests=args.sweep_requests,
                                       seed=args.seed, jobs=args.jobs, figure=not args.no_figure)
            document["load_sweep"] = {"folder": str(out / "load-sweep"), "highest_sustained_load": sustained}
        print_json(document)
        return 0
    point = demo["fluid"]
    w = demo["workload"]
    print(
        f"workload {w.name}: {len(w.types)} types, {w.total_rate_per_s:g} req/s, C = {w.kv_capacity_tokens} tokens; "
        f"fluid M* = {point.memory_star_tokens:.0f} tokens, ΔT* = {point.iteration_time_star_s * 1e3:.2f} ms, "
        f"load factor {point.load_factor:.3f}"
    )
    for name, r in demo["runs"].items():
        if "how" in r.extra:
            print(f"{name} policy: {r.extra['how']}")
    summaries = [r.summary for r in demo["runs"].values()]
    print(format_table(summaries, point.throughput_star_tokens_per_s))
    print()
    print(format_serving_table(summaries))
    for note in demo["notes"]:
        print(f"note: {note}", file=sys.stderr)
    if not args.no_sweep:
        sustained = run_load_sweep(out / "load-sweep", workload_spec=args.workload, requests=args.sweep_requests,
                                   seed=args.seed, jobs=args.jobs, figure=not args.no_figure)
        print("highest load sustained (throughput ≥ 95 % of offered, latency not growing), as a fraction of the fluid capacity θ*:")
        for name, load in sustained.items():
            print(f"  {name:<10} {'below the lowest load swept' if load is None else f'{load:g}'}")
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0
