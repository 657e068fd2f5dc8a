"""Recorded live steps as the engine writes them (`EngineResult.step_rows`), and the step
compositions rebuilt from their totals: one home for what `benchmarks/gpu_replay.py` replays and
what `runtime.gpu.calibrate` adds to its grid (`--from-steps`). Torch-free.

A steps file (`docs/loop-*-steps.json.gz`, `docs/fidelity-*-steps.json.gz`, a run folder's
`steps.json`) is a JSON list of step rows, or an object of such lists keyed by run (scheduler,
load); a row holds the step's composition as totals: `new_tokens`, `kv_tokens` (Σ context + new),
`num_decodes`, `num_prefills`, `prefill_attention_pairs` (Σ chunk · (context + chunk)), and its
live `measured_s` (and, when the engine wrote it, `start_s`, `host_s`, `graph`).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

ROW_KEYS = ("new_tokens", "kv_tokens", "num_decodes", "num_prefills", "prefill_attention_pairs", "measured_s")
REGIONS = ("decode", "prefill", "mixed", "cohort")
COHORT_MIN_PREFILLS = 4


class ReplayInputError(ValueError):
    """A steps file that cannot be replayed (what, where, what to do)."""


def load_steps(path: str) -> dict[str, list[dict]]:
    """{run name: [step rows]} of a steps file (gzip or plain JSON; a bare list is one run)."""
    p = Path(path)
    if not p.is_file():
        raise ReplayInputError(f"{path}: no such steps file; give a run's steps.json or a docs/*-steps.json.gz")
    opener = gzip.open if p.suffix == ".gz" else open
    try:
        with opener(p, "rt") as f:
            raw = json.load(f)
    except (OSError, json.JSONDecodeError, EOFError) as err:
        raise ReplayInputError(f"{path}: not a (gzipped) JSON steps file ({err}); give a run's steps.json or a docs/*-steps.json.gz") from None
    runs = {p.name.split(".")[0]: raw} if isinstance(raw, list) else raw
    if not isinstance(runs, dict) or not runs:
        raise ReplayInputError(f"{path}: expected a list of step rows or an object of such lists keyed by run, got {type(raw).__name__}")
    for name, rows in runs.items():
        if not isinstance(rows, list):
            raise ReplayInputError(f"{path}: run {name!r} is a {type(rows).__name__}, expected a list of step rows")
        for i, row in enumerate(rows):
            missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
            if missing:
                raise ReplayInputError(f"{path}: run {name!r} step {i} lacks {missing}; the file must hold step rows as the engine writes them (EngineResult.step_rows)")
            bad = [k for k in ROW_KEYS[:5] if not isinstance(row[k], int) or row[k] < 0]
            if bad or row["new_tokens"] < row["num_decodes"] + row["num_prefills"]:
                raise ReplayInputError(f"{path}: run {name!r} step {i}: {bad or 'new_tokens < decodes + prefills'} not a valid composition ({ {k: row[k] for k in ROW_KEYS[:5]} })")
    return runs


def region(row: dict) -> str:
    p, d = row["num_prefills"], row["num_decodes"]
    if p == 0:
        return "decode"
    if p >= COHORT_MIN_PREFILLS:
        return "cohort"
    return "mixed" if d else "prefill"


def composition(row: dict) -> list[tuple[int, int, bool]]:
    """[(new tokens, cached context, is_prefill)] of a step rebuilt from its recorded totals: the
    prefill tokens split evenly over the chunks (the first ones one longer), one common prefix c
    with Σ n·(c + n) as close as an integer c gets to the recorded pairs, the rest of the KV
    tokens over the decodes (each at least one cached token)."""
    d, p = row["num_decodes"], row["num_prefills"]
    np_ = row["new_tokens"] - d
    chunks = [np_ // p + (1 if i < np_ % p else 0) for i in range(p)] if p else []
    squares = sum(n * n for n in chunks)
    prefix = max(0, round((row["prefill_attention_pairs"] - squares) / np_)) if np_ else 0
    decode_kv = row["kv_tokens"] - np_ - p * prefix
    if d and decode_kv < 2 * d:  # the pairs and the KV total disagree: keep the KV total, shrink the prefix
        prefix = max(0, (row["kv_tokens"] - np_ - 2 * d) // p) if p else 0
        decode_kv = row["kv_tokens"] - np_ - p * prefix
    ctx_total = decode_kv - d  # Σ context over the decodes
    decodes = [(1, ctx_total // d + (1 if i < ctx_total % d else 0), False) for i in range(d)] if d else []
    return [(n, prefix, True) for n in chunks] + decodes


def composition_totals(comp) -> dict:
    pre = [(n, c) for n, c, is_prefill in comp if is_prefill]
    return {"new_tokens": sum(n for n, _, _ in comp), "kv_tokens": sum(n + c for n, c, _ in comp),
            "num_decodes": len(comp) - len(pre), "num_prefills": len(pre), "prefill_attention_pairs": sum(n * (c + n) for n, c in pre)}


def pick(rows_by_run: dict[str, list[dict]], per_region: int) -> list[tuple[str, int, dict]]:
    """Up to `per_region` steps of each region, evenly spaced over the runs' steps in order."""
    by_region: dict[str, list] = {r: [] for r in REGIONS}
    for name, rows in rows_by_run.items():
        for i, row in enumerate(rows):
            by_region[region(row)].append((name, i, row))
    picked = []
    for steps in by_region.values():
        if len(steps) <= per_region:
            picked += steps
        else:
            picked += [steps[round(j * (len(steps) - 1) / max(1, per_region - 1))] for j in range(per_region)]
    return picked


