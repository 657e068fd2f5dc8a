"""Where the drift experiments' minima and latency gaps came from (docs/adaptive.md, "Where the
minima came from" and "Why adaptive WAIT lagged static-peak on Azure and the periodic profile").

    PYTHONPATH=. python benchmarks/drift_causes.py            # about 6 minutes on 2 cores
    PYTHONPATH=. python benchmarks/drift_causes.py --parts lead,bound   # the quick ones

Reads the runs' curves from docs/adaptive-{step,periodic,azure-x10,azure-x12}.json (written by
`fluidsched drift`) and the experiment files, prints, and writes docs/drift-causes.json:

- `lead`: for each trace experiment and rate-bin width, the largest lead over 0–120 s of the
  fluid's arrived decode tokens (the bins' piecewise-constant rates) over the trace's own.
- `bins`: adaptive WAIT's and static-peak's minimum of generated tokens / fluid against the
  benchmark of the same requests (`fluid.over_time.benchmark_for_requests`) at several bin widths.
- `bound`: an upper bound for any policy — each request alone on the server from its arrival, a
  prefill step of d0 + d_new l, then one step per token of d0 + d_kv (l + 1) + d_new — over the
  ODE of a Poisson profile's expected rates, its minimum over the compared times.
- `latency`: adaptive minus static-peak latency per request on the same arrivals (simulated
  again), summed over 25 s of arrivals: the bins that make the gap, and the cap history.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXPERIMENTS = ("step", "periodic", "azure-x10", "azure-x12")
TRACE_BINS = ("span/60", 5.0, 1.0)
POISSON_BINS = (5.0, 1.0, 0.25)
PARTS = ("lead", "bins", "bound", "latency")


def _setup(name: str):
    from fluid.workload_io import load_workload
    from validation.drift import build_profile, load_experiment

    exp = load_experiment(ROOT / "validation" / "experiments" / "adaptive" / f"{name}.yaml")
    workload = load_workload(exp.workload)
    profile, rows = build_profile(exp, workload)
    runs = json.loads((ROOT / "docs" / f"adaptive-{name}.json").read_text())["runs"]
    return exp, workload, profile, rows, runs


def _requests(exp, workload, profile, rows, seed):
    from validation.drift import experiment_requests

    reqs = experiment_requests(exp, workload, profile, rows, seed)
    return (np.array([r.arrival_s for r in reqs]), np.array([r.prompt_tokens for r in reqs]),
            np.array([r.output_tokens for r in reqs]), reqs)


def lead(out: dict) -> None:
    for name in ("azure-x10", "azure-x12"):
        exp, workload, profile, rows, _ = _setup(name)
        at, _, o, _ = _requests(exp, workload, profile, rows, 0)
        t = np.arange(0.0, 120.0 + 1e-9, 0.5)
        arrived = np.array([o[at <= x].sum() for x in t])
        for b in TRACE_BINS:
            width = at.max() / 60 if b == "span/60" else b
            edges = np.arange(0.0, at.max() + width, width)
            if edges[-1] <= at.max():
                edges = np.append(edges, edges[-1] + width)
            tokens, _ = np.histogram(at, edges, weights=o)
            fluid = np.interp(t, edges, np.concatenate([[0.0], np.cumsum(tokens)]))
            i = int(np.argmax(fluid - arrived))
            row = {"experiment": name, "bin_s": width, "max_lead_tokens": float(fluid[i] - arrived[i]),
                   "at_s": float(t[i]), "arrived_tokens_then": float(arrived[i])}
            out.setdefault("lead", []).append(row)
            print(f"lead  {name:<10} bin {width:5.1f} s: fluid ahead by {row['max_lead_tokens']:6.0f} decode tokens "
                  f"at {row['at_s']:5.1f} s (the trace had {row['arrived_tokens_then']:.0f})", flush=True)


def bins(out: dict) -> None:
    from fluid.over_time import benchmark_for_requests, compare_cumulative

    for name in EXPERIMENTS:
        exp, workload, profile, rows, runs = _setup(name)
        for seed in exp.seeds:
            at, p, o, _ = _requests(exp, workload, profile, rows, seed)
            mine = {r["policy"]: r for r in runs if r["seed"] == seed and r["policy"] in ("adaptive", "static-peak")}
            t = np.asarray(mine["adaptive"]["curves"]["time_s"])
            for b in (TRACE_BINS if rows is not None else POISSON_BINS):
                width = at.max() / 60 if b == "span/60" else b
                bench = benchmark_for_requests(workload, at, p, o, t, bin_s=width, threshold_rate_per_s=profile.peak_rate_per_s())
                row = {"experiment": name, "seed": seed, "bin_s": width}
                for label, r in mine.items():
                    c = compare_cumulative(t, np.asarray(r["curves"]["generated_decode_tokens"]), bench.generated_decode_tokens)
                    row[label] = {"min": c["min"], "min_at_s": c["min_at_s"]}
                out.setdefault("bins", []).append(row)
                print(f"bins  {name:<10} seed {seed} bin {width:5.2f} s: adaptive {row['adaptive']['min']:.4f} at "
                      f"{row['adaptive']['min_at_s']:.0f} s, static-peak {row['static-peak']['min']:.4f}", flush=True)


def bound(out: dict) -> None:
    from fluid.over_time import COMPARE_FROM_SHARE
    from validation.drift import _fluid_curve

    for name in ("step", "periodic"):
        exp, workload, profile, rows, runs = _setup(name)
        d0, d_kv, d_new = workload.batch_time.linear_coefficients()
        for seed in exp.seeds:
            at, p, o, _ = _requests(exp, workload, profile, rows, seed)
            run = next(r for r in runs if r["seed"] == seed and r["policy"] == "adaptive")
            t = np.asarray(run["curves"]["time_s"])
            expected = _fluid_curve(workload, profile, float(t[-1]), exp.grid_s).generated_decode_tokens[:len(t)]
            steps = np.floor((t[None, :] - at[:, None] - (d0 + d_new * p)[:, None]) / (d0 + d_kv * (p + 1) + d_new)[:, None])
            solo = np.clip(steps, 0, o[:, None]).sum(axis=0)
            start = int(np.argmax(expected >= COMPARE_FROM_SHARE * expected[-1]))
            ratio = solo[start:] / expected[start:]
            row = {"experiment": name, "seed": seed, "solo_over_expected_min": float(ratio.min()),
                   "at_s": float(t[start + int(ratio.argmin())])}
            out.setdefault("bound", []).append(row)
            print(f"bound {name:<10} seed {seed}: solo bound / expected-rate ODE min {row['solo_over_expected_min']:.4f} "
                  f"at {row['at_s']:.0f} s", flush=True)


def latency(out: dict) -> None:
    from fluid.workload_io import load_workload
    from runtime.kv_blocks import KVBlockManager
    from runtime.sim import simulate
    from validation.drift import _copy, build_scheduler, policy_documents

    for name, seed in (("periodic", 0), ("periodic", 1), ("azure-x10", 0), ("azure-x12", 0)):
        exp, workload, profile, rows, _ = _setup(name)
        _, documents, names = policy_documents(load_workload(exp.workload), exp, profile)
        _, _, _, proto = _requests(exp, workload, profile, rows, seed)
        lat, history = {}, None
        for label in ("adaptive", "static-peak"):
            reqs = [_copy(r) for r in proto]
            sched = build_scheduler(label, KVBlockManager(workload.kv_capacity_tokens, 16), documents, names)
            simulate(sched, reqs, workload.batch_time)
            lat[label] = np.array([r.completion_s - r.arrival_s for r in reqs])
            history = history or getattr(sched, "cap_history", None)
        arrival = np.array([r.arrival_s for r in proto])
        diff = lat["adaptive"] - lat["static-peak"]
        by_bin = [{"from_s": float(lo), "sum_s": float(diff[(arrival >= lo) & (arrival < lo + 25)].sum())}
                  for lo in np.arange(0.0, arrival.max() + 25, 25.0)]
        row = {"experiment": name, "seed": seed, "mean_diff_ms": float(diff.mean() * 1e3),
               "slower": int((diff > 1e-9).sum()), "faster": int((diff < -1e-9).sum()), "by_25s_of_arrivals": by_bin,
               "cap_history": [(float(t), {k: int(v) for k, v in c.items()}) for t, c, _ in history]}
        out.setdefault("latency", []).append(row)
        top = sorted(by_bin, key=lambda b: -abs(b["sum_s"]))[:5]
        print(f"lat   {name:<10} seed {seed}: adaptive − static-peak {row['mean_diff_ms']:+.3f} ms a request "
              f"({row['slower']} slower, {row['faster']} faster); largest 25 s bins: "
              + ", ".join(f"{b['from_s']:.0f} s {b['sum_s']:+.2f}" for b in top), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--out", default=str(ROOT / "docs" / "drift-causes.json"))
    args = parser.parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        print(f"error: unknown part(s) {unknown}; the parts are {', '.join(PARTS)}", file=sys.stderr)
        return 2
    out: dict = {"command": "PYTHONPATH=. python benchmarks/drift_causes.py --parts " + ",".join(parts)}
    for part in parts:
        globals()[part](out)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
