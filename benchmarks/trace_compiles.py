"""Runs a `fluidsched` command and reports every Triton kernel compile, marking those after the run started.

    PYTHONPATH=. python benchmarks/trace_compiles.py run WORKLOAD --policy POLICY.json --requests 400 --out /tmp/r

A compile after the warm-up stalls an open-loop run for a fraction of a second (arrivals keep
coming while the GPU waits), so every line after "engine run starts" is a kernel specialisation
the warm-up did not cover. Prints each compile (seconds since start, kernel and its
specialisation) and, with `--out`, the first steps of the run folder's `steps.json`.
"""

from __future__ import annotations

import json
import runpy
import sys
import time
from pathlib import Path

from triton import knobs

import runtime.gpu.engine as engine

T0 = time.perf_counter()
late: list[str] = []
started = False


def _on_compile(**info) -> None:
    line = f"{time.perf_counter() - T0:8.3f} s  {info['repr'][:300]}"
    print("compile", line, flush=True)
    if started:
        late.append(line)


def _mark_run(run):
    def wrapped(self, *args, **kwargs):
        global started
        started = True
        print(f"engine run starts at {time.perf_counter() - T0:.3f} s", flush=True)
        return run(self, *args, **kwargs)

    return wrapped


def main() -> None:
    knobs.runtime.jit_cache_hook = _on_compile  # called on every in-process (re)compile or cache load
    engine.Engine.run = _mark_run(engine.Engine.run)
    argv = sys.argv[1:]
    sys.argv = ["fluidsched"] + argv
    try:
        runpy.run_module("validation.cli", run_name="__main__")
    except SystemExit as stop:
        if stop.code not in (0, None):
            raise
    print(f"{len(late)} compile(s) after the run started" + "".join("\n  " + line for line in late))
    if "--out" in argv:
        steps = Path(argv[argv.index("--out") + 1]) / "steps.json"
        if steps.is_file():
            rows = json.loads(steps.read_text())[:8]
            print("first steps (measured s, new tokens, decodes, graph):",
                  [(round(r["measured_s"], 3), r["new_tokens"], r["num_decodes"], r["graph"]) for r in rows])


if __name__ == "__main__":
    main()
