"""Calibration fit: step time predicted by the fitted batch-time model against the measured step
time, from a calibration result (`fluidsched calibrate`'s JSON: `table` of measured steps,
`fits` per model kind, `batch_time` chosen), on log axes with the y = x line."""

from __future__ import annotations

from pathlib import Path

from paper_figures.results import read_json
from paper_figures.style import FLUID_COLOUR, MARKERS, legend_outside, plain_log_axis, pyplot, save

EXPERIMENTS = ("calibration",)


def draw(calibration_json: Path, out_png: Path) -> Path | None:
    from fluid.batch_time import BatchShape, batch_time_from_dict

    data = read_json(calibration_json)
    if not isinstance(data, dict) or "table" not in data or "fits" not in data:
        return None
    shape_keys = ("new_tokens", "kv_tokens", "num_decodes", "num_prefills", "prefill_attention_pairs")
    measured = [row["time_s"] for row in data["table"]]
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for k, (kind, fit) in enumerate(sorted(data["fits"].items())):
        model = batch_time_from_dict(fit["batch_time"], source=str(calibration_json), field=f"fits.{kind}")
        # decode_key_tiles stays None in tables written before it was recorded (BatchShape estimates it)
        predicted = [model.step_time_s(BatchShape(**{key: row.get(key, 0) for key in shape_keys},
                                                  decode_key_tiles=row.get("decode_key_tiles")))
                     for row in data["table"]]
        ax.scatter([m * 1e3 for m in measured], [p * 1e3 for p in predicted], s=12, marker=MARKERS[k % len(MARKERS)],
                   label=f"{kind}: MAPE {fit['mape'] * 100:.1f} %, R² {fit['r2']:.3f}")
    lo, hi = min(measured) * 1e3 * 0.7, max(measured) * 1e3 * 1.4
    ax.plot([lo, hi], [lo, hi], color=FLUID_COLOUR, ls="--", lw=0.9, label="predicted = measured")
    plain_log_axis(ax, "x")
    plain_log_axis(ax, "y")
    ax.set_xlabel("measured step time (ms)")
    ax.set_ylabel("predicted step time (ms)")
    versions = data.get("versions", {})
    ax.set_title(f"{data.get('model', '')} on {data.get('device', '')} (torch {versions.get('torch', '?')})", fontsize=8)
    legend_outside(ax)
    fig.tight_layout()
    return save(fig, out_png)
