"""Readers of a sweep's result files (`validation/store.py` writes them): the tidy table
`points.sqlite`, the small per-point `series.json` and `bisection.json`. Figures and reports read
results through these only, and never run anything."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from fluid.errors import InputError


def is_sweep(folder: Path) -> bool:
    return (Path(folder) / "points.sqlite").is_file()


def read_table(out: str | Path, table: str = "points") -> list[dict]:
    """Rows of the tidy table as dicts."""
    path = Path(out) / "points.sqlite"
    if not path.is_file():
        raise InputError(f"no points.sqlite in {str(out)!r}; run `fluidsched sweep EXPERIMENT --out {out}` first", field="results_dir")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f'SELECT * FROM "{table}"')]
        finally:
            db.close()
    except sqlite3.DatabaseError as err:
        raise InputError(f"cannot read the results table ({err}); rebuild it with `fluidsched sweep` (finished points are kept)",
                         source=str(path)) from None


def read_json(path: Path):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"cannot read this result file ({err}); rerun the sweep that wrote it", source=str(path)) from None


# A sweep's packed form (what the repository keeps of committed results, `docs/validation.md`):
# every point's result.json, one JSON object per line, and every grid point's series by point id
PACKED_RESULTS = "results.jsonl.gz"
PACKED_SERIES = "series.json.gz"


def _read_gz_text(path: Path) -> str:
    import gzip

    try:
        return gzip.decompress(path.read_bytes()).decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise InputError(f"cannot read this packed result file ({err}); rerun the sweep that wrote it", source=str(path)) from None


_PACKED_CACHE: dict = {}


def _packed(path: Path, parse):
    """Parsed content of a packed file, cached while the file is unchanged."""
    key = (str(path), path.stat().st_mtime_ns, path.stat().st_size)
    if key not in _PACKED_CACHE:
        _PACKED_CACHE.clear()
        _PACKED_CACHE[key] = parse(_read_gz_text(path))
    return _PACKED_CACHE[key]


def packed_results(out: str | Path) -> dict[str, dict]:
    """{point_id: result} from the sweep's packed results ({} when there are none)."""
    path = Path(out) / PACKED_RESULTS
    if not path.is_file():
        return {}

    def parse(text):
        try:
            return {r["point_id"]: r for r in map(json.loads, text.splitlines()) if r}
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise InputError(f"corrupt packed results ({err}); rerun the sweep that wrote them", source=str(path)) from None

    return _packed(path, parse)


def read_series(out: str | Path, point_id: str) -> dict | None:
    """A point's series: its folder's series.json, else the sweep's packed series."""
    matches = sorted((Path(out) / "points").glob(f"*__{point_id}/series.json"))
    if matches:
        return read_json(matches[0])
    path = Path(out) / PACKED_SERIES
    if not path.is_file():
        return None

    def parse(text):
        try:
            return json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError(f"corrupt packed series ({err}); rerun the sweep that wrote them", source=str(path)) from None

    return _packed(path, parse).get(point_id)


def read_bisection(out: str | Path) -> list[dict]:
    path = Path(out) / "bisection.json"
    return read_json(path) if path.is_file() else []


def experiment_name(out: str | Path) -> str | None:
    path = Path(out) / "sweep.json"
    return read_json(path).get("experiment") if path.is_file() else None


def experiment_order(out: str | Path) -> dict[str, dict[str, int]]:
    """Positions of the workload and policy labels in the sweep's experiment file (its smoke
    section when the sweep was a smoke run), so tables and legends follow the file's order."""
    import yaml

    path = Path(out) / "experiment.yaml"
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {"workload": {}, "policy": {}}
    meta = Path(out) / "sweep.json"
    if meta.is_file() and read_json(meta).get("smoke") and isinstance(data.get("smoke"), dict):
        data = {**data, **data["smoke"]}

    def label(item, key):
        return item if isinstance(item, str) else str(item.get("label", item.get(key)))

    return {"workload": {label(w, "workload"): i for i, w in enumerate(data.get("workloads") or [])},
            "policy": {label(p, "scheduler"): i for i, p in enumerate(data.get("policies") or [])}}


def sorted_rows(out: str | Path, rows: list[dict]) -> list[dict]:
    order = experiment_order(out)
    return sorted(rows, key=lambda r: (order["workload"].get(r.get("workload"), 99), order["policy"].get(r.get("policy"), 99)))


def ok_rows(out: str | Path, **where) -> list[dict]:
    """Rows that ran (status ok) of kind 'grid', filtered by column == value, in the experiment
    file's order of workloads and policies."""
    rows = [r for r in read_table(out) if r.get("status") == "ok" and r.get("kind") == "grid"]
    return sorted_rows(out, [r for r in rows if all(r.get(k) == v for k, v in where.items())])


def ordered(values) -> list:
    """Distinct values in first-seen order."""
    return list(dict.fromkeys(values))


def first_seed(rows: list[dict]) -> list[dict]:
    """The rows of the lowest seed (figures that draw one run per point show seed 0)."""
    if not rows:
        return []
    seed = min(r["seed"] for r in rows)
    return [r for r in rows if r["seed"] == seed]


def labels(rows: list[dict]) -> tuple[list[str], list[str]]:
    """(workloads, policies) of `rows`, in the rows' order."""
    return ordered(r["workload"] for r in rows), ordered(r["policy"] for r in rows)


def series_of(results: str | Path, rows: list[dict], policy: str, load: float) -> dict | None:
    """`series.json` of the first row of `policy` at `load`, or None."""
    pts = [r for r in rows if r["policy"] == policy and r["load"] == load]
    return read_series(results, pts[0]["point_id"]) if pts else None
