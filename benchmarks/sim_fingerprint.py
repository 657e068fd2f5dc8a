"""Fingerprint every policy's simulation on fixed workloads, to show a speed change changed nothing.

For each scheduler and each workload variant it prints the run's summary (throughput, restarts,
latencies, KV use) and a SHA-256 over every request's timestamps (first scheduled, prefill chunk
ends, token times, completion, evictions) and of the per-step log. Two runs of this script on
two versions of the code must print the same lines; `--out FILE` writes them to a file for `diff`.

The same digests, for a few fixed runs, are the golden test `tests/test_golden_runs.py`
(`--write-golden tests/data/golden_runs.json` rewrites its file after a deliberate change of
results; say why in the commit).

Variants: the `chat-d-ten-bins` preset as benchmarked (`bench`), the same with a quarter of
its KV capacity (`tight`: evictions for WAIT's fallback, FCFS and SLAI) or a twentieth (`tiny`:
evictions for the capped baselines too), and the same
with one-token blocks (`token`: the paper's memory model).

    python benchmarks/sim_fingerprint.py [--requests 3000] [--only wait,sarathi] [--out FILE] [--write-golden FILE]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sim import PRESET, runs  # noqa: E402

VARIANTS = {"bench": (1.0, 16), "tight": (0.25, 16), "tiny": (0.05, 16), "token": (1.0, 1)}


GOLDEN_REQUESTS = 300  # small enough for CI, large enough for evictions in the tight variants


def request_digest(result) -> str:
    """SHA-256 prefix over every request's timestamps and the step log (what a rewrite must keep)."""
    h = hashlib.sha256()
    for r in result.requests:
        h.update(
            repr(
                (
                    r.request_id,
                    r.first_scheduled_s,
                    r.prefill_chunk_end_s,
                    r.token_times_s,
                    r.completion_s,
                    r.eviction_times_s,
                    r.restarts,
                )
            ).encode()
        )
    log = result.steps
    h.update(repr((log.start_s, log.end_s, log.new_tokens, log.kv_tokens, log.num_decodes, log.num_prefills,
                   log.kv_used_tokens, log.num_evicted)).encode())
    return h.hexdigest()[:16]


def fingerprint(name, workload, knobs, num_requests, capacity_fraction, block_size) -> str:
    from runtime.arrivals import make_requests
    from runtime.kv_blocks import KVBlockManager
    from runtime.metrics import summarize
    from runtime.schedulers import make_scheduler
    from runtime.sim import simulate

    requests = make_requests(workload, num_requests, 0)
    capacity = int(workload.kv_capacity_tokens * capacity_fraction)
    scheduler = make_scheduler(name, KVBlockManager(capacity, block_size), **knobs)
    try:
        result = simulate(scheduler, requests, workload.batch_time, max_steps=2_000_000)
    except Exception as err:  # a policy that cannot run a variant: the error is its fingerprint
        return f"error {type(err).__name__}: {err}"
    summary = summarize(result, scheduler=name, warmup_s=0.1 * requests[-1].arrival_s)
    keys = ("completed", "num_steps", "decode_throughput_tokens_per_s", "mean_latency_s", "p99_latency_s", "mean_ttft_s",
            "p99_tbt_s", "restarts", "peak_kv_tokens")
    picked = {k: getattr(summary, k) for k in keys}
    return f"{json.dumps(picked, sort_keys=True)} digest={request_digest(result)}"


def golden_lines(num_requests: int = GOLDEN_REQUESTS) -> dict[str, str]:
    """{'variant label': fingerprint} for every registered policy on every variant."""
    from fluid.workload_io import load_workload
    from runtime.schedulers import available_schedulers

    workload = load_workload(PRESET)
    planned = runs(workload, available_schedulers())
    out = {}
    for variant, (fraction, block_size) in VARIANTS.items():
        for label, name, knobs, _ in planned:
            out[f"{variant} {label}"] = fingerprint(name, workload, knobs, num_requests, fraction, block_size)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--only", help="comma-separated scheduler names")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--out")
    parser.add_argument("--write-golden", metavar="FILE", help=f"write the golden test's file ({GOLDEN_REQUESTS} requests) and exit")
    args = parser.parse_args(argv)
    if args.write_golden:
        lines = golden_lines()
        Path(args.write_golden).write_text(json.dumps({"requests": GOLDEN_REQUESTS, "runs": lines}, indent=1) + "\n", encoding="utf-8")
        print(f"wrote {len(lines)} fingerprints to {args.write_golden}")
        return 0

    from fluid.workload_io import load_workload
    from runtime.schedulers import available_schedulers

    workload = load_workload(PRESET)
    names = args.only.split(",") if args.only else available_schedulers()
    planned = runs(workload, names)
    lines = []
    for variant in args.variants.split(","):
        fraction, block_size = VARIANTS[variant]
        for label, name, knobs, _ in planned:
            line = f"{variant:6s} {label:16s} {fingerprint(name, workload, knobs, args.requests, fraction, block_size)}"
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
