"""Collects `gpu_fidelity.py` output folders (one per machine) into the files `docs/` keeps.

    python benchmarks/fidelity_docs.py RUN_DIR [RUN_DIR ...] --tag h200 --command "..."

writes `docs/fidelity-TAG.json` (the last run's device, versions, host, stepwise model, held-out
MAPE and points; every run's points under `runs`), `docs/reproducibility-TAG.json` (per run: host,
device, versions, tok/s and mean TTFT per scheduler at load 0.9, step over device time, eager
share; and the spread between runs), and copies the last run's calibration, step benchmark and
live step log to `docs/calibration-TAG-fidelity.json`, `docs/bench-steps-TAG.json`,
`docs/fidelity-TAG-steps.json.gz` (and the host-term runs' steps, when the run wrote them, to
`docs/fidelity-TAG-host-steps.json.gz`). A folder that lacks `steps.json` (its step benchmark was not
kept) takes the median step-over-device ratio from `--step-ratio-from-log LOG` when given.
`--reproducibility-only` writes the reproducibility file alone. `--append-reproducibility` keeps the runs the reproducibility file already holds (machines whose
folders are gone) and adds these after them. `--markdown` also writes `docs/fidelity-TAG.md` from the last run alone (every figure there is
read from the JSON it writes beside it: device, versions, command, held-out step error per
region, the recorded live steps' error with each run held out, each point's live against
simulated figures, which targets are met, and per point the live steps against the model).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SCHEDULERS = ("wait", "vllm-v1", "sarathi")


def _run(folder: Path, log: Path | None) -> dict:
    fid = json.loads((folder / "fidelity.json").read_text())
    clocks, cal = folder / "gpu-clocks.csv", folder / "calibration.json"
    if clocks.is_file() and cal.is_file():  # from the run's own files, with the current summary
        from runtime.gpu.clock_log import by_pass_region, read_samples, window_summary

        samples = read_samples(clocks)
        fid["calibration_machine_speed_by_pass_region"] = by_pass_region(json.loads(cal.read_text())["table"], samples)
        for p in fid["points"]:  # each live run's window over the whole log (its last samples may have come after it)
            if "wall_s" in p:
                p["gpu_clocks"] = window_summary(samples, *p["wall_s"])
    steps_file = folder / "steps.json"
    if steps_file.is_file():
        ratio = json.loads(steps_file.read_text())["step_vs_device"]["median_step_over_device"]
    elif log is not None:
        ratios = [float(m) for m in re.findall(r"ratio ([0-9.]+)", log.read_text())]
        ratio = statistics.median(ratios) if ratios else None
    else:
        ratio = None
    near = [p for p in fid["points"] if p["load"] == 0.9]
    steps = sum(p["num_steps"] for p in near)
    return {
        "folder": str(folder), "host": fid["host"], "device": fid["device"], "versions": fid["versions"], "command": fid["command"],
        "calibration_made_here": not fid["smoke_test_reused_calibration"], "load": 0.9,
        "tok_s": {p["scheduler"]: p["measured_tok_s"] for p in near},
        "mean_ttft_s": {p["scheduler"]: p["measured_mean_ttft_s"] for p in near},
        "step_over_device_median": ratio,
        "eager_step_share": sum(p["eager_step_share"] * p["num_steps"] for p in near) / steps if steps else None,
        "heldout_step_mape": fid["heldout_step_mape"],
    }, fid


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", type=Path, nargs="+")
    ap.add_argument("--tag", default="h200")
    ap.add_argument("--command", required=True)
    ap.add_argument("--docs", type=Path, default=Path("docs"))
    ap.add_argument("--markdown", action="store_true", help="also write docs/fidelity-TAG.md from the last run")
    ap.add_argument("--step-ratio-from-log", type=Path, action="append", default=[], help="per run without steps.json, in order")
    ap.add_argument("--append-reproducibility", action="store_true",
                    help="keep the runs already in docs/reproducibility-TAG.json (earlier machines) and add these after them")
    ap.add_argument("--reproducibility-only", action="store_true",
                    help="write docs/reproducibility-TAG.json alone (a run added to the machines' comparison, its own docs kept under another tag)")
    args = ap.parse_args()
    logs = iter(args.step_ratio_from_log)
    runs, fids = [], []
    for folder in args.runs:
        run, fid = _run(folder, None if (folder / "steps.json").is_file() else next(logs, None))
        runs.append(run)
        fids.append(fid)
    last = fids[-1]
    fidelity = {k: last[k] for k in ("device", "versions", "host", "model", "command", "batch_time_model", "linear3_for_fluid",
                                      "heldout_step_mape", "heldout_mape_by_region", "slack", "requests", "points")}
    for key in ("loop", "deadline_s", "cut_by_deadline", "smoke", "calibration_from_steps", "recorded_live_heldout_by_run", "host_terms", "sizing",
                "heldout_step_mape_by_row", "calibration_protocol", "calibration_machine_speed_by_pass_region"):  # newer gpu_fidelity.py keys
        if key in last:
            fidelity[key] = last[key]
    fidelity["collected_by"] = args.command
    fidelity["runs"] = [{"host": f["host"], "heldout_step_mape": f["heldout_step_mape"], "points": f["points"]} for f in fids]
    if not args.reproducibility_only:
        (args.docs / f"fidelity-{args.tag}.json").write_text(json.dumps(fidelity, indent=1) + "\n")
    repro_path = args.docs / f"reproducibility-{args.tag}.json"
    earlier, repro_command = [], args.command
    if args.append_reproducibility and repro_path.is_file():
        kept = json.loads(repro_path.read_text())
        earlier, repro_command = kept["runs"], f"{kept['command']}; then {args.command}"
    runs = earlier + runs
    spread = {}
    if len(runs) > 1:
        for s in SCHEDULERS:
            values = [r["tok_s"][s] for r in runs]
            spread[s] = max(values) / min(values) - 1
    repro = {"command": repro_command, "runs": runs, "tok_s_spread_between_runs": spread, "target": "tok/s within 3 % per scheduler"}
    repro_path.write_text(json.dumps(repro, indent=1) + "\n")
    src = args.runs[-1]
    if args.reproducibility_only:
        print(json.dumps(spread))
        return
    for name, dst in (("calibration.json", f"calibration-{args.tag}-fidelity.json"), ("steps.json", f"bench-steps-{args.tag}.json"),
                      ("live-steps.json.gz", f"fidelity-{args.tag}-steps.json.gz"), ("host-steps.json.gz", f"fidelity-{args.tag}-host-steps.json.gz"),
                      ("gpu-clocks.csv", f"gpu-clocks-{args.tag}.csv")):
        if (src / name).is_file():
            shutil.copyfile(src / name, args.docs / dst)
    if args.markdown:
        (args.docs / f"fidelity-{args.tag}.md").write_text(markdown(fidelity, args.tag, args.command))
    print(json.dumps(spread))


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.1f} %"


def _rel(sim, live) -> str:
    return "n/a" if sim is None or not live else f"{100 * (sim / live - 1):+.1f} %"


def _protocol(fid: dict) -> str:
    """How the calibration was timed and fitted, and the per-row held-out figure where the fit took medians."""
    proto = fid.get("calibration_protocol") or {}
    if not proto.get("passes"):
        return ""
    fitted_on = "each point's median" if proto["pass_aggregate"] == "median" else "every row"
    text = f"; {proto['passes']} passes in {proto['pass_order']} order, fitted on {fitted_on}"
    if proto.get("pass_aggregate") == "median" and fid.get("heldout_step_mape_by_row") is not None:
        text += f" (fitted on every pass's row instead: {_pct(fid['heldout_step_mape_by_row'])})"
    return text


def _machine_speed(fid: dict) -> list[str]:
    """The machine's speed through the run: per calibration pass and region, and per live point."""
    cal = fid.get("calibration_machine_speed_by_pass_region") or {}
    pts = [p for p in fid["points"] if "host_probe_before" in p]
    if not cal and not pts:
        return []

    def clocks(c: dict) -> str:
        if not c or not c.get("samples"):
            return "– | – | –"
        held = c.get("held_down_share")
        return f"{c.get('clocks.sm', float('nan')):.0f} (min {c.get('clocks.sm_min', float('nan')):.0f}) | {c.get('clocks.mem', float('nan')):.0f} | " \
               + ("–" if held is None else f"{100 * held:.0f} %")

    lines = ["## The machine's speed through the run", "",
             "Host: a 10⁵-iteration Python loop (ms) timed before each calibration point and around each live run; GPU: SM and memory "
             "clocks (MHz, median over nvidia-smi samples every 200 ms) and the share of samples with the clocks held down by power, heat "
             "or a slowdown.", ""]
    if cal:
        lines += ["| calibration | points | Python loop | SM clock | memory clock | held down |", "| --- | --- | --- | --- | --- | --- |"]
        for key, e in cal.items():
            loop = e.get("python_loop_1e5_s_median")
            lines.append(f"| {key} | {e['points']} | {'–' if loop is None else f'{1e3 * loop:.2f}'} | {clocks(e.get('gpu_clocks'))} |")
        lines += [""]
    if pts:
        lines += ["| live point | Python loop before / after | SM clock | memory clock | held down | live / model, mixed | decode |",
                  "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in pts:
            r = p.get("live_turn_vs_stepwise_by_region") or {}
            ratio = [f"{r[g]['median_measured_over_predicted']:.3f}" if g in r else "–" for g in ("mixed", "decode")]
            lines.append(f"| {p['scheduler']} {p['load']} | {1e3 * p['host_probe_before']['python_loop_1e5_s']:.2f} / "
                         f"{1e3 * p['host_probe_after']['python_loop_1e5_s']:.2f} | {clocks(p.get('gpu_clocks'))} | {ratio[0]} | {ratio[1]} |")
        lines += [""]
    return lines


def markdown(fid: dict, tag: str, command: str) -> str:
    """The note beside docs/fidelity-TAG.json: its figures, nothing else."""
    v = fid["versions"]
    vers = ", ".join(f"{k} {v[k]}" for k in sorted(v)) if isinstance(v, dict) else str(v)
    host = fid.get("host") or {}
    lines = [f"# Does the simulator predict the GPU? Step-time model and live-vs-simulated runs ({fid['device']})", "",
             f"Evidence: `docs/fidelity-{tag}.json` (every figure below), `docs/calibration-{tag}-fidelity.json` (every calibration "
             f"row and fit), `docs/fidelity-{tag}-steps.json.gz` (every live step). One process on one machine ({fid['device']}; "
             f"host: {host.get('cpu_model', 'n/a')}, {host.get('cpu_cores', 'n/a')} cores; {vers}):", "",
             f"    {fid['command']}", "", f"collected by `{command}`.", ""]
    if fid.get("smoke"):
        lines += ["**SMOKE TEST (CPU, tiny model): no figure here is a result.**", ""]
    lines += ["## Step-time model", "",
              f"Stepwise model, k-fold held-out step MAPE over the calibration rows: **{_pct(fid.get('heldout_step_mape'))}** (target ≤ 3 %: "
              f"{'met' if (fid.get('heldout_step_mape') or 1) <= 0.03 else '**missed**'})" + _protocol(fid) + ".", ""]
    by = fid.get("heldout_mape_by_region") or {}
    if by:
        lines += ["| region | held-out MAPE |", "| --- | --- |"] + [f"| {g} | {_pct(e)} |" for g, e in sorted(by.items(), key=lambda x: -x[1])] + [""]
    ho = fid.get("recorded_live_heldout_by_run")
    if ho:
        lines += [f"Recorded live steps (`{', '.join(fid.get('calibration_from_steps') or [])}`), each run predicted by a fit that left "
                  f"its rows out: {_pct(ho['all']['mape'])} over {ho['all']['steps']} steps.", "",
                  "| region | steps | MAPE | median live / model |", "| --- | --- | --- | --- |"]
        lines += [f"| {g} | {e['steps']} | {_pct(e['mape'])} | {e['median_measured_over_predicted']:.3f} |" for g, e in ho["pooled"].items()] + [""]
    host = fid.get("host_terms")
    if host:
        loads = host.get("loads") or [host["load"]]  # files before the two-load fit name one load
        lines += [f"Host terms (scheduler call + step bookkeeping, beyond the engine step), fitted on {sum(host['steps_per_scheduler'].values())} "
                  f"live steps of this machine (all three schedulers pooled) at load{'s' if len(loads) > 1 else ''} "
                  f"{', '.join(map(str, loads))} (seed {host['seed']}; the points below use seed 0): "
                  + ", ".join(f"{k} {1e6 * v:.2f} µs" for k, v in host["coefficients"].items())
                  + (" — **not applied** (a reused calibration keeps its own)." if host.get("applied") is False else "."), ""]
        if host.get("per_scheduler"):
            lines += ["Each scheduler's own fit on its own host-run steps (recorded as evidence; the model is the pooled fit):", "",
                      "| scheduler | " + " | ".join(host["coefficients"]) + " |", "| --- |" + " --- |" * len(host["coefficients"])]
            lines += [f"| {n} | " + " | ".join(f"{1e6 * c[k]:.2f} µs" for k in host["coefficients"]) + " |" for n, c in host["per_scheduler"].items()] + [""]
    sizing = fid.get("sizing")
    if sizing:
        lines += [f"Loads are fractions of the simulator's capacity with this model: {sizing['capacity_tok_s']:,.0f} decode tokens/s, the least of "
                  + ", ".join(f"{k} {v:,.0f}" for k, v in sizing["carried_tok_s"].items())
                  + f" carried when offered {sizing['offered_tok_s']:,.0f} ({sizing['requests']} requests).", ""]
    loop = fid.get("loop", "synchronous")
    lines += [f"## Live against simulated (same arrivals; simulated with the stepwise model; {loop} loop)", "",
              "\"Below saturation\": the live run carried ≥ 95 % of the offered decode tokens. Targets below saturation: throughput "
              "within 2 %, mean latency within 5 %.", "",
              "| scheduler | load | below sat. | live tok/s | simulated | live mean latency | simulated | live TTFT | simulated | evictions live / sim | targets |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for p in fid["points"]:
        tok = abs(p["simulated_tok_s"] / p["measured_tok_s"] - 1) if p["measured_tok_s"] else None
        lat = abs(p["simulated_mean_latency_s"] / p["measured_mean_latency_s"] - 1) if p["measured_mean_latency_s"] else None
        verdict = "n/a (saturated)" if not p["below_saturation"] else (
            f"tok/s {'met' if tok is not None and tok <= 0.02 else '**missed**'}, latency {'met' if lat is not None and lat <= 0.05 else '**missed**'}")
        lines.append(f"| {p['scheduler']} | {p['load']} | {'yes' if p['below_saturation'] else 'no'} | {p['measured_tok_s']:,.0f} | "
                     f"{p['simulated_tok_s']:,.0f} ({_rel(p['simulated_tok_s'], p['measured_tok_s'])}) | {p['measured_mean_latency_s']:.3f} s | "
                     f"{p['simulated_mean_latency_s']:.3f} s ({_rel(p['simulated_mean_latency_s'], p['measured_mean_latency_s'])}) | "
                     f"{p.get('measured_mean_ttft_s', 0):.3f} s | {p.get('simulated_mean_ttft_s', 0):.3f} s | "
                     f"{p['measured_evictions']} / {p['simulated_evictions']} | {verdict} |")
    lines += [""]
    if any("simulated_own_host_mean_latency_s" in p for p in fid["points"]):
        lines += ["Simulated with each scheduler's own host terms instead of the pooled ones (not the model; evidence of whether they differ):", "",
                  "| scheduler | load | live mean latency | pooled host terms | own host terms |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {p['scheduler']} | {p['load']} | {p['measured_mean_latency_s']:.3f} s | "
                  f"{_rel(p['simulated_mean_latency_s'], p['measured_mean_latency_s'])} | "
                  f"{_rel(p['simulated_own_host_mean_latency_s'], p['measured_mean_latency_s'])} |"
                  for p in fid["points"] if "simulated_own_host_mean_latency_s" in p] + [""]
    if any("live_turn_vs_stepwise_by_region" in p for p in fid["points"]):
        lines += ["## This run's live steps against the model (never in its fit)", "",
                  "Median live step (time + bookkeeping gap to the next step) over the model's prediction, by region; MAPE in brackets.", "",
                  "| scheduler | load | decode | prefill | mixed | cohort | median gap |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for p in fid["points"]:
            r = p.get("live_turn_vs_stepwise_by_region") or {}
            cells = [f"{r[g]['median_measured_over_predicted']:.3f} ({_pct(r[g]['mape'])}, {r[g]['steps']})" if g in r else "–"
                     for g in ("decode", "prefill", "mixed", "cohort")]
            gap = p.get("median_gap_s")
            lines.append(f"| {p['scheduler']} | {p['load']} | " + " | ".join(cells) + f" | {'n/a' if gap is None else f'{1e3 * gap:.2f} ms'} |")
        lines += [""]
    lines += _machine_speed(fid)
    if fid.get("cut_by_deadline"):
        lines += [f"Not run (deadline {fid.get('deadline_s')} s): " + ", ".join(f"{c['scheduler']} at {c['load']}" for c in fid["cut_by_deadline"]), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
