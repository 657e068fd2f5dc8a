"""Replay the steps of a recorded live run on the engine: each step's time against its device time
and against the time recorded live (issue 13, "a reproducibility benchmark").

    PYTHONPATH=. python benchmarks/gpu_replay.py docs/loop-h200-L090-slack0-steps.json.gz --out replay.json
    PYTHONPATH=. python benchmarks/gpu_replay.py STEPS.json.gz --model tiny-llama --device cpu --out smoke.json   # CPU smoke

A steps file (`docs/loop-*-steps.json.gz`, `docs/fidelity-*-steps.json.gz`, a run folder's
`steps.json`) is a JSON list of step rows, or an object of such lists keyed by run (scheduler,
load); a row holds the step's composition as totals: `new_tokens`, `kv_tokens` (Σ context + new),
`num_decodes`, `num_prefills`, `prefill_attention_pairs` (Σ chunk · (context + chunk)), and its
live `measured_s` and `graph`. The per-sequence lengths were not recorded, so the replayed step is
rebuilt from the totals (`composition`): the prefill tokens split evenly over the chunks, one
common cached prefix that gives the recorded attention pairs, the decodes' context split evenly.
New tokens, KV tokens and the decode and prefill counts are those recorded, exactly; the pairs up
to rounding (exact when the chunks were of equal length and on equal prefixes).

Each replayed step goes through `Engine.execute` like a live one (`StepTimer`: host preparation,
graph replay or eager forward, sampling, sync; median of `--repeats`). Device time is the replay
of the step's CUDA graph timed with CUDA events back to back (the bucket it was padded to); an
eager step has no graph, and gets the CUDA-event span of its forward instead (`eager_span_s`, an
upper bound: launch gaps included). Regions: decode (no prefill), prefill (1–3 prefill chunks, no
decode), mixed (1–3 chunks beside decodes), cohort (≥ 4 prefill chunks, with or without decodes:
WAIT's admission steps). Per region: medians and 90th percentiles of step / device and step /
recorded. `eager_share` gives, for every step of the file (not only those replayed), the share the
engine's graph buckets leave eager, beside the share recorded live.

`--varlen-sweep` first runs `benchmarks/bench_varlen.py` in a child process (the prefill attention
tilings) and, with `--varlen auto`, runs this replay with the best tiling it found (the tiling is
read at import, so it must be chosen before the engine is built); `--flatness` adds
`benchmarks/gpu_steps.py`'s flatness table (1–32 prefill sequences at 512 and 2,048 tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

# one home for the recorded rows and their rebuilt compositions (also the calibration grid's --from-steps)
from runtime.recorded_steps import (  # noqa: F401  (re-exported: tests read them as gpu_replay.*)
    REGIONS, ROW_KEYS, ReplayInputError, composition, composition_totals, load_steps, pick, region,
)

class Coverage:
    """Which steps the engine's graphs serve: its own buckets on CUDA; on CPU (no graphs) the
    buckets the same pool would get on CUDA (`runtime.gpu.cuda_graphs`, `runtime.gpu.step_graphs`)."""

    def __init__(self, engine):
        from runtime.gpu.cuda_graphs import DEFAULT_BUCKETS, bucket_at_least, seats_cap
        from runtime.gpu.step_graphs import MAX_DECODES, MAX_PREFILLS, TOKEN_BUCKETS

        blocks = engine.pool.shape.num_blocks
        g, m = engine.graphs, engine.mixed_graphs
        self.decode_buckets = g.buckets if g is not None else seats_cap(DEFAULT_BUCKETS, blocks)
        self.token_buckets = m.buckets if m is not None else tuple(TOKEN_BUCKETS)
        self.max_prefills = m.max_prefills if m is not None else min(MAX_PREFILLS, blocks)
        self.max_decodes = m.max_decodes if m is not None else min(MAX_DECODES, blocks)
        self._at_least = bucket_at_least

    def graph_of(self, num_tokens: int, num_prefills: int, num_decodes: int) -> str | None:
        """"decode" / "step" (the graph family) or None (eager), as `Engine.execute` decides."""
        if num_prefills == 0:
            return "decode" if self._at_least(num_decodes, self.decode_buckets) else None
        if num_prefills > self.max_prefills or num_decodes > self.max_decodes:
            return None
        return "step" if self._at_least(num_tokens, self.token_buckets) else None

    def describe(self) -> dict:
        return {"decode_buckets": list(self.decode_buckets), "token_buckets": list(self.token_buckets),
                "max_prefills": self.max_prefills, "max_decodes": self.max_decodes}


def _quantiles(values: list[float]) -> dict:
    if not values:
        return {"n": 0, "median": None, "p90": None}
    s = sorted(values)
    return {"n": len(s), "median": statistics.median(s), "p90": s[min(len(s) - 1, round(0.9 * (len(s) - 1)))]}


def summarize(rows: list[dict]) -> dict:
    out = {}
    for name in REGIONS + ("all",):
        sel = [r for r in rows if name == "all" or r["region"] == name]
        if not sel:
            continue
        out[name] = {
            "steps": len(sel),
            "graphed_share": sum(r["graph"] for r in sel) / len(sel),
            "step_over_device": _quantiles([r["step_over_device"] for r in sel if r["step_over_device"] is not None]),
            "step_over_recorded": _quantiles([r["step_over_recorded"] for r in sel]),
            "median_step_s": statistics.median(r["step_s"] for r in sel),
            "median_recorded_s": statistics.median(r["recorded_s"] for r in sel),
            "median_host_s": statistics.median(r["host_s"] for r in sel),
        }
    return out


def _timer_class():
    from runtime.gpu.step_timer import StepTimer  # times (new, context, is_prefill) compositions as they are

    return StepTimer


def _graph_of(engine, comp):
    """The CUDA graph `Engine.execute` replayed for `comp` (its buffers still hold that step)."""
    d = sum(1 for _, _, is_prefill in comp if not is_prefill)
    p, tokens = len(comp) - d, sum(n for n, _, _ in comp)
    if p == 0:
        return engine.graphs._graphs[engine.graphs.bucket_for(d)][0]
    return engine.mixed_graphs._graphs[engine.mixed_graphs.bucket_for(tokens, p, d)][0]


def replay(engine, timer, picked, *, repeats: int) -> tuple[list[dict], list[dict]]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from runtime.gpu.step_timer import cuda_event_time_s

    on_cuda = engine.runner.device.type == "cuda"
    rows, skipped = [], []
    for name, index, rec in picked:
        comp = composition(rec)
        if not timer.fits(comp):
            skipped.append({"run": name, "index": index, "why": "does not fit the pool or the position limit"})
            continue
        step_s, _ = timer.time_s(comp, repeats=repeats)
        graph = timer.last_graph
        device_s = span_s = None
        if on_cuda:
            if graph:
                device_s = cuda_event_time_s(_graph_of(engine, comp).replay, repeats=max(5, repeats))
            else:
                batch, reqs = timer._batch(comp)
                try:
                    span_s = cuda_event_time_s(lambda: engine.execute(batch), max(3, repeats // 2), warmup=0)
                finally:
                    for r in reqs:
                        timer.kv.release(r)
                        engine.sequences.pop(r.request_id, None)
        row = {"run": name, "index": index, "region": region(rec), "recorded_s": rec["measured_s"], "recorded_graph": rec.get("graph"),
               "recorded": {k: rec[k] for k in ROW_KEYS[:5]}, "replayed_pairs": composition_totals(comp)["prefill_attention_pairs"],
               "step_s": step_s, "host_s": timer.last_host_s, "graph": graph, "device_s": device_s, "eager_span_s": span_s,
               "step_over_device": step_s / device_s if device_s else None, "step_over_recorded": step_s / rec["measured_s"]}
        rows.append(row)
    return rows, skipped


def eager_share(rows_by_run: dict[str, list[dict]], coverage: Coverage) -> dict:
    out = {}
    for name, rows in rows_by_run.items():
        eager_now = [r for r in rows if coverage.graph_of(r["new_tokens"], r["num_prefills"], r["num_decodes"]) is None]
        recorded = [r for r in rows if "graph" in r]
        out[name] = {
            "steps": len(rows),
            "recorded": (1 - sum(bool(r["graph"]) for r in recorded) / len(recorded)) if recorded else None,
            "now": len(eager_now) / len(rows) if rows else None,
            "now_by_region": {g: sum(1 for r in eager_now if region(r) == g) for g in REGIONS},
            "largest_eager_now": sorted(({k: r[k] for k in ("new_tokens", "num_decodes", "num_prefills")} for r in eager_now),
                                        key=lambda x: -x["new_tokens"])[:5],
        }
    return out


def _run_varlen_sweep(out_dir: Path) -> dict:
    here = Path(__file__).resolve().parent
    sweep_json, best_file = out_dir / "varlen-sweep.json", out_dir / "varlen-best.txt"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here.parent), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(here / "bench_varlen.py"), "--out", str(sweep_json), "--best-to", str(best_file)], env=env, text=True)
    if proc.returncode != 0 or not sweep_json.is_file():
        return {"error": f"bench_varlen.py exited {proc.returncode}"}
    res = json.loads(sweep_json.read_text())
    res["best_spec"] = best_file.read_text().strip() if best_file.is_file() else None
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("steps", nargs="+", help="steps files (.json or .json.gz) of recorded live runs")
    ap.add_argument("--out", default="replay.json")
    ap.add_argument("--model", default="llama-2-7b")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--kv-tokens", type=int, default=200_000, help="pool size (tokens); the largest replayed step must fit")
    ap.add_argument("--per-region", type=int, default=40, help="steps replayed per region (evenly spaced over the runs)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--runs", help="comma-separated run names to keep (default: every run of every file)")
    ap.add_argument("--varlen-sweep", action="store_true", help="run benchmarks/bench_varlen.py first (CUDA)")
    ap.add_argument("--varlen", default="default", help="prefill attention tiling: 'default', 'auto' (the sweep's best) or a FLUIDSCHED_VARLEN_PREFILL value")
    ap.add_argument("--flatness", action="store_true", help="also the 1-32 prefill-sequence flatness table (gpu_steps.py)")
    args = ap.parse_args(argv)
    try:
        rows_by_run = {}
        for path in args.steps:
            for name, rows in load_steps(path).items():
                rows_by_run[f"{Path(path).name}:{name}"] = rows
        if args.runs:
            keep = set(args.runs.split(","))
            rows_by_run = {k: v for k, v in rows_by_run.items() if k.split(":", 1)[1] in keep}
            if not rows_by_run:
                raise ReplayInputError(f"--runs {args.runs}: no such run in the files; runs are the keys of each file's JSON object")
        if args.per_region < 1 or args.repeats < 1:
            raise ReplayInputError("--per-region and --repeats must be ≥ 1")
        if args.varlen == "auto" and not args.varlen_sweep:
            raise ReplayInputError("--varlen auto needs --varlen-sweep (it takes the sweep's best tiling)")
    except ReplayInputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    res = {"command": "PYTHONPATH=. python benchmarks/gpu_replay.py " + " ".join(sys.argv[1:] if argv is None else argv), "files": args.steps}
    if args.varlen_sweep:
        res["varlen_sweep"] = _run_varlen_sweep(out.parent)
        out.write_text(json.dumps(res, indent=1) + "\n")
        if args.varlen == "auto" and res["varlen_sweep"].get("best_spec"):
            os.environ["FLUIDSCHED_VARLEN_PREFILL"] = res["varlen_sweep"]["best_spec"]
    elif args.varlen not in ("default", "auto"):
        os.environ["FLUIDSCHED_VARLEN_PREFILL"] = args.varlen
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_steps import build_engine

    from runtime.gpu.attention import PREFILL_TILES
    from runtime.gpu.cuda_graphs import GRAPH_MEMORY_BUDGET_BYTES
    from runtime.gpu.host_info import describe_host, versions

    t0 = time.perf_counter()
    engine, info = build_engine(args.model, args.kv_tokens, args.device)
    res.update({"device": info.device_name, "versions": versions(), "host": describe_host(), "model": args.model,
                "varlen_prefill_tiling": PREFILL_TILES.spec(), "engine_build_s": time.perf_counter() - t0})
    coverage = Coverage(engine)
    stats = [g.capture_stats for g in (engine.graphs, engine.mixed_graphs) if g is not None]
    kept = sum(s["kept_bytes"] for s in stats)
    res["graphs"] = dict(coverage.describe(), capture=stats, kept_bytes=kept, budget_bytes=GRAPH_MEMORY_BUDGET_BYTES,
                         within_budget=(kept <= GRAPH_MEMORY_BUDGET_BYTES) if stats else None)
    if stats:
        print(f"graphs: {sum(len(s['buckets']) for s in stats)} captured in {sum(s['capture_s'] for s in stats):.1f} s, "
              f"kept {kept / 2**30:.2f} GiB (budget {GRAPH_MEMORY_BUDGET_BYTES / 2**30:.1f} GiB)", flush=True)
    res["eager_share"] = eager_share(rows_by_run, coverage)
    out.write_text(json.dumps(res, indent=1) + "\n")  # each phase saved: a run cut short keeps what it measured
    for name, e in res["eager_share"].items():
        print(f"eager share {name}: recorded {e['recorded']}, now {e['now']:.3f}", flush=True)
    timer = _timer_class()(engine)
    rows, skipped = replay(engine, timer, pick(rows_by_run, args.per_region), repeats=args.repeats)
    res["steps"], res["skipped"], res["summary"] = rows, skipped, summarize(rows)
    out.write_text(json.dumps(res, indent=1) + "\n")
    for name, s in res["summary"].items():
        sod, sor = s["step_over_device"], s["step_over_recorded"]
        print(f"{name:8s} {s['steps']:4d} steps graphed {100 * s['graphed_share']:5.1f} %  step/device median {sod['median']} p90 {sod['p90']}  "
              f"step/recorded median {sor['median']:.3f} p90 {sor['p90']:.3f}  step {1e3 * s['median_step_s']:.2f} ms (recorded {1e3 * s['median_recorded_s']:.2f})", flush=True)
    if args.flatness:
        from gpu_steps import flatness

        res["flatness"] = flatness(engine, timer, repeats=args.repeats)
    res["wall_s"] = time.perf_counter() - t_start
    out.write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {out} ({res['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
