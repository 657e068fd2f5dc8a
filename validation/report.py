"""The markdown report of a folder of sweeps: per experiment its description, the command and
machine that produced it, tables (means over seeds with 95 % t intervals), λ* by bisection, the
points that had no result and why, and every figure (drawn from the result files first).

Tables are pivots — one row per policy (or per policy and knob), one column per load — declared
per experiment in `TABLES`; an experiment without an entry gets the default tables.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from paper_figures.results import ordered, read_bisection, read_json, read_table, sorted_rows
from validation.stats import lambda_star_estimate, t_interval


@dataclass(frozen=True)
class Pivot:
    title: str
    value: str  # column of the tidy table
    fmt: str = "{:.3g}"
    rows: tuple[str, ...] = ("policy",)
    col: str = "load"
    per_workload: bool = True


LATENCY = Pivot("mean latency (s)", "mean_latency_s")
THROUGHPUT = Pivot("decode throughput / offered", "throughput_over_offered", "{:.3f}")
DEFAULT_TABLES = (THROUGHPUT, LATENCY)
TABLES: dict[str, tuple[Pivot, ...]] = {
    "01-fluid-vs-sim": (
        Pivot("decode throughput / throughput*", "throughput_over_star", "{:.3f}"),
        Pivot("peak KV / M*", "peak_kv_over_memory_star", "{:.2f}"),
        Pivot("mean step / ΔT*", "mean_step_over_dt_star", "{:.2f}"),
    ),
    "02-latency-vs-load": (LATENCY, Pivot("p99 latency (s)", "p99_latency_s"), Pivot("restarts per request", "restart_rate", "{:.3f}"), THROUGHPUT),
    "03-unknown-lengths": (
        THROUGHPUT, LATENCY, Pivot("restarts per request", "restart_rate", "{:.3f}"),
        # the run's completed decode tokens against the fluid ODE's benchmark over time for the same
        # requests (fluid/over_time.py): lowest ratio from the warm-up cut on, and at the run's end
        Pivot("completed decode tokens / fluid ODE benchmark, lowest over time after the warm-up cut", "cum_over_fluid_min", "{:.3f}"),
        Pivot("completed decode tokens / fluid ODE benchmark, at the run's end", "cum_over_fluid_end", "{:.3f}"),
    ),
    "04-slo-aware": (
        Pivot("median TTFT (s)", "p50_ttft_s"),
        Pivot("p99 TBT, tier 0 (s)", "tier0_p99_tbt_s"),
        Pivot("p99 TBT, tier 1 (s)", "tier1_p99_tbt_s"),
        THROUGHPUT,
    ),
    "05-throughput-optimality": (THROUGHPUT, LATENCY, Pivot("latency growth (last / first quarter)", "latency_growth", "{:.2f}")),
    "06-nested-segments": (
        Pivot("memory reserved by the policy, M^π + buffer (tokens)", "policy_memory_required_tokens", "{:.0f}"),
        Pivot("peak KV in use (tokens)", "peak_kv_tokens", "{:.0f}"),
        THROUGHPUT,
    ),
    "06-fleet-routing": (
        Pivot("decode throughput / offered", "throughput_over_offered", "{:.3f}", rows=("knob_replicas", "knob_router", "policy")),
        Pivot("mean latency (s)", "mean_latency_s", rows=("knob_replicas", "knob_router", "policy")),
    ),
    "08-gpu-h200-predictions": (
        Pivot("decode throughput / throughput*", "throughput_over_star", "{:.3f}"),
        LATENCY,
        Pivot("mean TTFT (s)", "mean_ttft_s"),
    ),
    "07-fcfs-counterexample": (
        Pivot("decode throughput / offered", "throughput_over_offered", "{:.3f}", rows=("policy", "knob_arrivals"), col="workload", per_workload=False),
        Pivot("restarts per request", "restart_rate", "{:.3f}", rows=("policy", "knob_arrivals"), col="workload", per_workload=False),
        Pivot("mean latency (s)", "mean_latency_s", rows=("policy", "knob_arrivals"), col="workload", per_workload=False),
    ),
}


def _label(value) -> str:
    if isinstance(value, str) and value.startswith("{"):
        spec = json.loads(value)
        return spec.get("kind", value) if spec.get("kind") != "trace" else f"trace {Path(spec['trace']).name}"
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def pivot_markdown(rows: list[dict], pivot: Pivot) -> str:
    grid = [r for r in rows if r.get("kind") == "grid"]
    cols = sorted({r[pivot.col] for r in grid}, key=lambda v: (isinstance(v, str), v))
    keys = ordered(tuple(r.get(k) for k in pivot.rows) for r in grid)
    if "policy" in pivot.rows and len(pivot.rows) > 1:
        # policies in the experiment file's order, then the other columns sorted within each
        at = pivot.rows.index("policy")
        policy_pos = {p: i for i, p in enumerate(ordered(k[at] for k in keys))}
        keys.sort(key=lambda k: (policy_pos[k[at]], [str(v) for i, v in enumerate(k) if i != at]))
    head = [k.replace("knob_", "") for k in pivot.rows] + [f"{pivot.col} {_label(c)}" for c in cols]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key in keys:
        cells = []
        for c in cols:
            mine = [r for r in grid if tuple(r.get(k) for k in pivot.rows) == key and r[pivot.col] == c]
            ok = [r for r in mine if r["status"] == "ok"]
            if not mine:
                cells.append("")
            elif not ok:
                cells.append("no policy" if mine[0]["error"] else "-")
            else:
                cells.append(t_interval([r.get(pivot.value) for r in ok]).text(pivot.fmt))
        lines.append("| " + " | ".join([_label(k) for k in key] + cells) + " |")
    return "\n".join(lines)


def bisection_markdown(records: list[dict]) -> str:
    if not records:
        return ""
    lines = ["| workload | policy | criterion | λ* (fraction of θ*) | λ* (req/s) | seeds | bracket per seed |", "|---|---|---|---|---|---|---|"]
    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault((r["workload"], r["policy"], json.dumps(r.get("knobs") or {}, sort_keys=True)), []).append(r)
    for (wl, pol, _), recs in groups.items():
        bounded = [r for r in recs if r["bound"] == "bracket"]
        brackets = ", ".join(f"[{r['lo']:.3f}, {r['hi']:.3f}]" if r["bound"] == "bracket" else
                             ("< lowest load tried" if r["bound"] == "below" else "≥ highest load tried") for r in recs)
        est = lambda_star_estimate(bounded) if bounded else None
        scale = recs[0]["capacity_scale"] * recs[0]["total_rate_per_s"]
        req = f"{est.mean * scale:.3g} ± {est.half_width * scale:.2g}" if est and est.half_width is not None else \
              (f"{est.mean * scale:.3g}" if est and est.mean is not None else "-")
        lines.append(f"| {wl} | {pol} | {recs[0]['criterion']} | {est.text('{:.3f}') if est else '-'} | {req} | {len(recs)} | {brackets} |")
    return "\n".join(lines)


COMPARED = (("decode tok/s", "decode_throughput_tokens_per_s"), ("mean latency s", "mean_latency_s"),
            ("mean TTFT s", "mean_ttft_s"), ("peak KV", "peak_kv_tokens"))


def measured_vs_predicted_markdown(measured: list[dict], predicted: list[dict]) -> str:
    """Measured points (a GPU run of the same points) beside the simulator's prediction for the
    same point id, with the relative error (measured − predicted) / predicted."""
    by_id = {r["point_id"]: r for r in predicted if r["status"] == "ok"}
    head = ["workload", "policy", "load", "seed"] + [f"{name}: measured / predicted (error)" for name, _ in COMPARED]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for m in measured:
        p = by_id.get(m["point_id"])
        if m["status"] != "ok" or p is None:
            continue
        cells = []
        for _, key in COMPARED:
            a, b = m.get(key), p.get(key)
            err = f" ({(a - b) / b * 100:+.1f} %)" if a is not None and b else ""
            cells.append("-" if a is None or b is None else f"{a:.4g} / {b:.4g}{err}")
        lines.append(f"| {m['workload']} | {m['policy']} | {m['load']:g} | {m['seed']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def _errors_markdown(rows: list[dict]) -> str:
    bad = [r for r in rows if r["status"] != "ok"]
    if not bad:
        return ""
    reasons: dict[str, list[dict]] = {}
    for r in bad:
        reasons.setdefault(f"{r['workload']} / {r['policy']}", []).append(r)
    lines = [f"{len(bad)} of {len(rows)} points have no result (the solver found no thresholds, or the run was refused):", ""]
    for key, group in reasons.items():
        loads = ", ".join(f"{x:g}" for x in sorted({r["load"] for r in group}))
        lines.append(f"- {key} at load {loads}: {group[0]['error'][:300]}")
    return "\n".join(lines)


def sweep_section(sweep: Path, report_dir: Path, figures: list[Path]) -> str:
    meta = read_json(sweep / "sweep.json") if (sweep / "sweep.json").is_file() else {}
    name = meta.get("experiment", sweep.name)
    experiment = read_json_yaml(sweep / "experiment.yaml")
    rows = sorted_rows(sweep, read_table(sweep))
    machine = meta.get("machine") or {}
    versions = ordered(str(r.get("code_version") or "not recorded") for r in rows)
    parts = [f"## {name}", "", (experiment.get("description") or "").strip(), "",
             f"Produced by `{meta.get('command', '?')}`"
             + (f" on {machine.get('cpu')}, {machine.get('cores')} cores, Python {machine.get('python')}, numpy {machine.get('numpy')}"
                if machine else "") + f"; code version of the points: {', '.join(versions)}.", "",
             f"{len(rows)} points; {len({r['seed'] for r in rows})} seed(s); requests per point as in the experiment file. "
             "Cells: mean over seeds ± the 95 % t interval's half-width (no ± with one seed)."]
    if meta.get("smoke"):
        parts += ["", "**Smoke size**: a tiny version for testing; its numbers mean nothing."]
    for pivot in TABLES.get(name, DEFAULT_TABLES):
        groups = ordered(r["workload"] for r in rows) if pivot.per_workload else [None]
        for wl in groups:
            mine = [r for r in rows if wl is None or r["workload"] == wl]
            title = f"{pivot.title}" + (f", {wl}" if wl else "")
            parts += ["", f"**{title}**", "", pivot_markdown(mine, pivot)]
    gpu = sweep.with_name(f"{sweep.name}-gpu")
    if (gpu / "points.sqlite").is_file():
        # a GPU run of the same points (same ids) next to this sweep: measured beside predicted
        gpu_meta = read_json(gpu / "sweep.json") if (gpu / "sweep.json").is_file() else {}
        compared = measured_vs_predicted_markdown(sorted_rows(gpu, read_table(gpu)), rows)
        if compared:
            parts += ["", f"**Measured on the GPU ({gpu.name}: {gpu_meta.get('device', 'device not recorded')}) against the "
                      "simulator's prediction for the same points**", "", compared]
    bis = bisection_markdown(read_bisection(sweep))
    if bis:
        parts += ["", "**λ\\* by bisection** (criterion in `docs/validation.md`; ± combines the seeds' t interval "
                  "and the bisection's resolution)", "", bis]
    errors = _errors_markdown(rows)
    if errors:
        parts += ["", errors]
    for fig in figures:
        parts += ["", f"![{fig.stem}]({fig.relative_to(report_dir).as_posix()})"]
    return "\n".join(parts)


def read_json_yaml(path: Path) -> dict:
    import yaml

    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return {}


def _current_figures(sweep: Path) -> list[Path]:
    """The sweep's figures, redrawn from its result files unless they are newer than its table."""
    from paper_figures.cli import draw_sweep

    folder = sweep / "figures"
    table_mtime = (sweep / "points.sqlite").stat().st_mtime
    existing = sorted(folder.glob("*.png")) if folder.is_dir() else []
    if existing and all(p.stat().st_mtime >= table_mtime for p in existing):
        return existing
    return sorted(draw_sweep(sweep, folder))


def write_report(results: Path, out_md: Path | None = None) -> Path:
    from paper_figures.cli import draw_all, sweep_folders

    results = Path(results)
    out_md = Path(out_md) if out_md else results / "report.md"
    sections = ["# Validation report", "",
                f"Built by `fluidsched report {results.as_posix()}` from the result files under `{results.as_posix()}`; "
                "every table and figure below is regenerated from them (`fluidsched figures` redraws the figures).",
                "Loads are fractions of the fluid capacity scale θ* of each workload (arXiv 2504.11320) unless a "
                "table says otherwise; 1 is the fluid capacity."]
    sweeps = sweep_folders(results)
    if not sweeps:
        draw_all(results)  # fails clearly when there is nothing to report
    for sweep in sweeps:
        if sweep.name.endswith("-gpu") and sweep.with_name(sweep.name[:-4]).is_dir():
            continue  # reported beside its predictions
        sections += ["", sweep_section(sweep, out_md.parent, _current_figures(sweep))]
    from paper_figures.calibration_fit import draw as draw_calibration

    calibration = [draw_calibration(p, p.with_name(f"{p.stem}-fit.png")) for p in sorted(results.glob("calibration/*.json"))]
    calibration = [p for p in calibration if p is not None]
    if calibration:
        sections += ["", "## Calibration", "", "Step times predicted by the fitted batch-time models against the "
                     "measured ones (the calibration JSON beside each figure, as `fluidsched calibrate` writes it)."]
        sections += [f"\n![{p.stem}]({p.relative_to(out_md.parent).as_posix()})" for p in calibration]
    out_md.write_text("\n".join(sections) + "\n", encoding="utf-8")
    return out_md
