"""`fluidsched demo [--out DIR] [--requests N]`: the README's main job, end to end.

1. Load the `default` workload preset and its fluid benchmark (closed form, arXiv 2504.11320).
2. Solve a WAIT policy with `thresholds` (the paper's cohort rule; if no integer thresholds fit
   in memory, the authors' batch-cap recipe with the continuous service rule) and a Nested WAIT
   policy (skipped, with the reason, when none fits).
3. Simulate them and the baselines (vLLM v0 and v1 style, Sarathi-Serve, Orca, FCFS) on the
   same arrivals.
4. Print one table with the fluid throughput* next to them; write the run folders, the policies,
   `demo.json` and the comparison figure (`paper_figures/demo_comparison.py`) under `--out`.
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
    parser.add_argument("--no-figure", action="store_true", help="skip the PNG figure")
    add_json_argument(parser, "print demo.json's object (fluid numbers, summaries, notes) instead of the tables")


@dataclass
class SolvedPolicy:
    scheduler: str  # "wait" or "nested-wait"
    document: dict  # the policy JSON
    how: str  # how it was obtained, for the report


def _fluid_batch_size(workload) -> int:
    """Requests in one fluid iteration, Σ_j n_j* (l'_j + 1): the batch cap of the batch-cap recipe."""
    from fluid.equilibrium import closed_form

    point = closed_form(workload)
    return max(1, round(sum(n * (t.decode + 1) for n, t in zip(point.prompts_per_stage, workload.types))))


def solve_policies(workload) -> tuple[list[SolvedPolicy], list[str]]:
    """WAIT and Nested WAIT policies for `workload` via `thresholds`; notes say what was skipped."""
    from thresholds.build import nested_policy, wait_policy
    from thresholds.nested import NestedOptions, solve_nested
    from thresholds.wait import solve_wait, solve_wait_batch_cap

    solved, notes = [], []
    try:
        doc = wait_policy(workload, solve_wait(workload), service_rule="cohort").to_dict()
        solved.append(SolvedPolicy("wait", doc, "solve_wait (cohort rule)"))
    except UnstableWorkloadError as err:
        cap = _fluid_batch_size(workload)
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
    from runtime.results import write_json, write_run_folder

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for name, run in demo["runs"].items():
        write_run_folder(out / name, run)
    write_json(out / "demo.json", demo_document(demo))
    if figure:
        from paper_figures.demo_comparison import draw_demo_comparison

        draw_demo_comparison(out / "demo.json", out / "demo_comparison.png")
    return out


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


def run(args) -> int:
    from runtime.cli_simulate import format_serving_table, format_table

    t0 = time.perf_counter()
    demo = run_demo(args.workload, num_requests=args.requests, seed=args.seed)
    out = write_demo(args.out, demo, figure=not args.no_figure)
    if args.json:
        for note in demo["notes"]:
            print(f"note: {note}", file=sys.stderr)
        print_json(demo_document(demo))
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
    print(f"wrote {out} in {time.perf_counter() - t0:.1f} s")
    return 0
