"""Run folders: one directory per simulated run, written by the caller after the run returns.

Layout:

    config.json     resolved configuration: workload (resolved dict), scheduler, options, seed,
                    number of requests, rate scale, block size, replicas/router, code version
    policy.json     the policy file used (WAIT / Nested WAIT), when there is one
    summary.json    `runtime.summary.RunSummary.to_dict()` (names the scheduler and the executor)
    metrics.csv     one row per request (`runtime.metrics.request_rows`)
    trace.json      Chrome / Perfetto trace events of the batches (open in ui.perfetto.dev):
                    one complete event ("X") per step on the replica's track, with its shape,
                    and a counter ("C") of KV tokens in use.
"""

from __future__ import annotations

import csv
import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from fluid.file_output import atomic_folder, atomic_write_text, finite_json
from runtime.metrics import request_rows
from runtime.step_log import SimResult
from runtime.summary import RunSummary


def code_version() -> str:
    """`git describe --always --dirty` of the source tree when available, else the package version."""
    here = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=here,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        from importlib.metadata import version

        return version("fluidsched")
    except Exception:  # noqa: BLE001 - a missing distribution only loses the label
        return "unknown"


def trace_events(results: list[SimResult], *, max_steps: int | None = 200_000) -> list[dict]:
    """Chrome trace events of every step of every replica (timestamps in microseconds)."""
    events: list[dict] = []
    for res in results:
        pid = res.replica
        events.append({"name": "process_name", "ph": "M", "pid": pid, "args": {"name": f"replica {pid}"}})
        steps = res.steps
        n = len(steps) if max_steps is None else min(len(steps), max_steps)
        for i in range(n):
            start_us = steps.start_s[i] * 1e6
            args = {
                "decodes": steps.num_decodes[i],
                "prefills": steps.num_prefills[i],
                "new_tokens": steps.new_tokens[i],
                "kv_tokens_touched": steps.kv_tokens[i],
                "evicted": steps.num_evicted[i],
            }
            if steps.type_counts:
                args["by_type"] = steps.type_counts[i]
            events.append(
                {
                    "name": "batch",
                    "cat": "step",
                    "ph": "X",
                    "ts": start_us,
                    "dur": (steps.end_s[i] - steps.start_s[i]) * 1e6,
                    "pid": pid,
                    "tid": 0,
                    "args": args,
                }
            )
            events.append({"name": "kv_used_tokens", "ph": "C", "ts": start_us, "pid": pid, "args": {"tokens": steps.kv_used_tokens[i]}})
    return events


@dataclass
class RunOutput:
    """Everything a run folder holds, returned by the run and written by `write_run_folder`."""

    config: dict
    summary: RunSummary
    results: list[SimResult]  # one per replica
    policy: dict | None = None
    extra: dict = field(default_factory=dict)

    @property
    def requests(self):
        return [r for res in self.results for r in res.requests]


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: Path, data, *, compact: bool = False) -> None:
    """Strict JSON (non-finite numbers written as null), through a temporary file and a rename."""
    text = json.dumps(finite_json(data), default=_json_default, allow_nan=False,
                      **({"separators": (",", ":")} if compact else {"indent": 2}))
    atomic_write_text(path, text + "\n")


def write_run_folder(out_dir: str | Path, run: RunOutput, *, trace: bool = True, atomic: bool = True) -> Path:
    """Write `run` into `out_dir`, replacing an earlier run folder there as a whole; returns it.

    The files go to a temporary folder renamed into place when complete (`fluid.file_output`), so
    a failure or Ctrl-C leaves no half-written folder and no stale file of an earlier run.
    `atomic=False` writes straight into `out_dir` (already a temporary folder of the caller's).
    """
    if atomic:
        with atomic_folder(out_dir) as tmp:
            _write_files(tmp, run, trace=trace)
        return Path(out_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_files(out, run, trace=trace)
    return out


def _write_files(out: Path, run: RunOutput, *, trace: bool) -> None:
    config = dict(run.config)
    config.setdefault("code_version", code_version())
    write_json(out / "config.json", config)
    if run.policy is not None:
        write_json(out / "policy.json", run.policy)
    write_json(out / "summary.json", run.summary.to_dict())
    rows = request_rows(sorted(run.requests, key=lambda r: (r.arrival_s, r.request_id)))
    with (out / "metrics.csv").open("w", newline="", encoding="utf-8") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if trace:
        write_json(out / "trace.json", {"traceEvents": trace_events(run.results), "displayTimeUnit": "ms"}, compact=True)
