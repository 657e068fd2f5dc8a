"""A sweep's results on disk: one folder per point, and one tidy table of all points.

    DIR/experiment.yaml            the experiment file as run (and `smoke: true|false`)
    DIR/points/<folder>/           one per finished point, written atomically:
        result.json                the typed summary (`validation.points.PointResult`)
        config.json                the run's resolved configuration (as `runtime/results.py` writes
                                   it) with the point as run under `point` (resolved workload,
                                   policy spec, knobs) and the code version
        policy.json                the solved WAIT / Nested WAIT policy, when there is one
        series.json                small downsampled series for figures (`validation/series.py`;
                                   grid points only, bisection steps need none)
        requests.csv.gz            one row per request (`runtime.metrics.request_rows`)
    DIR/results.jsonl.gz           the packed form: every point's result.json, one per line
    DIR/series.json.gz             ... and every grid point's series, by point id
    DIR/bisection.json             λ* per (workload, policy, seed) and its bracket
    DIR/points.sqlite              the tidy table: one row per point (table `points`), one per
                                   bisection (table `bisection`); rebuilt from the folders

A point folder is built under a temporary name and renamed into place, so an interrupted sweep
leaves only complete folders (and a stale temporary one, removed at the next start); a rerun
skips every point whose folder (or packed result) exists. The table is a function of the
folders and the packed form, so it can always be rebuilt (`rebuild_table`). The repository keeps
a sweep's packed form, table, figures and metadata, not its point folders: a fresh clone reports,
draws and resumes from those alone. SQLite rather than Parquet: it is in the standard library, so the
sweep, the report and the figures need no extra dependency, and one file holds both tables.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sqlite3
from pathlib import Path

from paper_figures.results import packed_results, read_series, read_table  # noqa: F401 - the readers' one home
from validation.points import PointPayload, folder_name, point_id
from validation.summary_adapter import summary_dict

TMP_PREFIX = ".tmp-"


def _dump(path: Path, data, *, compact: bool = False) -> None:
    text = json.dumps(data, allow_nan=False, default=float, **({"separators": (",", ":")} if compact else {"indent": 1}))
    path.write_text(text + "\n", encoding="utf-8")


def _rounded(value, digits: int = 6):
    """Floats to `digits` significant digits: series for figures need no more, and the files
    are committed."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    return value


def points_dir(out: Path) -> Path:
    return Path(out) / "points"


def clean_temporaries(out: Path) -> int:
    """Remove half-written point folders of an interrupted sweep; returns how many."""
    root = points_dir(out)
    stale = [p for p in root.glob(f"{TMP_PREFIX}*")] if root.is_dir() else []
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return len(stale)


def finished_result(out: Path, point: dict) -> dict | None:
    """The point's `result.json` when its folder is complete (or, in a sweep kept only in packed
    form, its packed result), else None."""
    path = points_dir(out) / folder_name(point) / "result.json"
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return packed_results(out).get(point_id(point))


def _clean(value):
    """JSON without NaN/inf (a summary may hold inf for an unstable fluid point): None instead."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def write_point(out: Path, point: dict, payload: PointPayload) -> Path:
    root = points_dir(out)
    root.mkdir(parents=True, exist_ok=True)
    final = root / folder_name(point)
    tmp = root / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    _dump(tmp / "result.json", _clean(payload.result))
    for name, data in (("config.json", payload.config), ("policy.json", payload.policy)):
        if data is not None:
            _dump(tmp / name, _clean(data))
    if payload.series is not None:
        _dump(tmp / "series.json", _rounded(_clean(payload.series)), compact=True)
    if payload.requests_csv_gz is not None:
        (tmp / "requests.csv.gz").write_bytes(payload.requests_csv_gz)
    if final.exists():  # the same point finished twice (two sweeps at once): keep the first
        shutil.rmtree(tmp)
        return final
    os.replace(tmp, final)
    return final


def read_results(out: Path) -> list[dict]:
    """Every finished point's result: the folders', and the packed ones no folder replaces."""
    results = dict(packed_results(out))
    root = points_dir(out)
    for folder in sorted(root.iterdir()) if root.is_dir() else []:
        path = folder / "result.json"
        if folder.name.startswith(TMP_PREFIX) or not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        results[result["point_id"]] = result
    return [results[k] for k in sorted(results)]


def _write_gz(path: Path, text: str) -> None:
    import gzip

    tmp = path.with_name(TMP_PREFIX + path.name)
    tmp.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))  # mtime 0: the same results, the same bytes
    os.replace(tmp, path)


def pack(out: Path) -> None:
    """Write the sweep's packed form: every result (one JSON line each) and every grid point's
    series, from the folders and any earlier packed form. The repository keeps these, the table
    and the figures, not the point folders (`docs/validation.md`)."""
    from paper_figures.results import PACKED_RESULTS, PACKED_SERIES, read_series

    results = read_results(out)
    _write_gz(Path(out) / PACKED_RESULTS, "".join(json.dumps(_clean(r), sort_keys=True, separators=(",", ":")) + "\n" for r in results))
    series = {}
    for r in results:
        if r.get("kind") == "grid" and r.get("status") == "ok":
            found = read_series(out, r["point_id"])
            if found is not None:
                series[r["point_id"]] = found
    _write_gz(Path(out) / PACKED_SERIES, json.dumps(_rounded(series), sort_keys=True, separators=(",", ":")))


def flat_row(result: dict) -> dict:
    """One tidy row: the point's identity, then fluid_*, every scalar summary metric, derived."""
    row = {k: result[k] for k in ("point_id", "experiment", "kind", "workload", "policy", "scheduler", "load",
                                  "rate_scale", "seed", "requests", "status", "error", "policy_how")}
    row["code_version"] = result.get("code_version")
    row["knobs"] = json.dumps(result.get("knobs") or {}, sort_keys=True)
    for key, value in (result.get("knobs") or {}).items():
        row[f"knob_{key}"] = json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else value
    for tier in (result.get("derived") or {}).get("tiers") or []:
        for key in ("p50_ttft_s", "p99_tbt_s", "tbt_slo_s", "requests"):
            row[f"tier{tier['tier']}_{key}"] = tier.get(key)
    summary = summary_dict(result.get("summary") or {})
    for prefix, part in (("fluid_", result.get("fluid") or {}), ("", summary), ("", result.get("derived") or {})):
        for key, value in part.items():
            if isinstance(value, bool):
                value = int(value)
            if isinstance(value, (int, float, str)) or value is None:
                row[prefix + key] = value
    return row


def _write_table(db: sqlite3.Connection, name: str, rows: list[dict]) -> None:
    db.execute(f'DROP TABLE IF EXISTS "{name}"')
    if not rows:
        db.execute(f'CREATE TABLE "{name}" (point_id TEXT)')
        return
    columns = list(dict.fromkeys(k for r in rows for k in r))
    db.execute(f'CREATE TABLE "{name}" ({", ".join(f"{chr(34)}{c}{chr(34)}" for c in columns)})')
    marks = ", ".join("?" for _ in columns)
    db.executemany(f'INSERT INTO "{name}" VALUES ({marks})', [[r.get(c) for c in columns] for r in rows])


def rebuild_table(out: Path) -> Path:
    """Write `points.sqlite` from the point folders and `bisection.json` (atomically)."""
    out = Path(out)
    rows = [flat_row(r) for r in read_results(out)]
    bisection_path = out / "bisection.json"
    bis = json.loads(bisection_path.read_text(encoding="utf-8")) if bisection_path.is_file() else []
    final = out / "points.sqlite"
    tmp = out / f"{TMP_PREFIX}points.sqlite"
    tmp.unlink(missing_ok=True)
    db = sqlite3.connect(tmp)
    try:
        _write_table(db, "points", rows)
        _write_table(db, "bisection", [{k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in b.items()} for b in bis])
        db.commit()
    finally:
        db.close()
    os.replace(tmp, final)
    return final


def write_bisection(out: Path, records: list[dict]) -> None:
    tmp = Path(out) / f"{TMP_PREFIX}bisection.json"
    _dump(tmp, _clean(records))
    os.replace(tmp, Path(out) / "bisection.json")
