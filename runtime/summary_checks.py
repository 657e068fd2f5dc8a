"""Warnings about a run's own numbers: when the headline cannot mean what it seems to.

The headline throughput is measured over a window (warm-up cut to the last arrival,
`runtime.metrics.measurement_window_s`). When arrivals end long before the work does (a CPU run
that queues everything, or a burst), that window is a sliver of the run and its rate says little:
a 100-request CPU run can headline 1.7 tokens/s while it produced 1,152 tokens/s overall.
"""

from __future__ import annotations

# below either, the window is too short to stand for the run
MIN_WINDOW_SHARE = 0.25  # of the run's end time
MIN_WINDOW_REQUESTS = 30  # measured (arrived after warm-up and completed)


def short_window_warning(summary) -> str | None:
    """A sentence to print when the measurement window is too short to mean anything, else None.

    `summary` is a `runtime.summary.RunSummary` or its dict.
    """
    d = summary.to_dict() if hasattr(summary, "to_dict") else summary
    start_s, stop_s = d.get("window_start_s"), d.get("window_stop_s")
    end_s = d.get("sim_end_s") or d.get("wall_s")
    if start_s is None or stop_s is None or not end_s or end_s <= 0:
        return None
    span_s = float(stop_s) - float(start_s)
    measured = int(d.get("measured_requests") or 0)
    if span_s >= MIN_WINDOW_SHARE * end_s and measured >= MIN_WINDOW_REQUESTS:
        return None
    overall = d.get("overall_decode_throughput_tokens_per_s")
    overall_text = f"; over the whole run it produced {overall:,.1f} decode tokens/s" if overall is not None else ""
    return (
        f"warning: the throughput window [{start_s:.3g}, {stop_s:.3g}] s covers {span_s:.3g} s of a {end_s:.3g} s run "
        f"with {measured} measured request(s), so the headline {d.get('decode_throughput_tokens_per_s') or 0:,.1f} "
        f"decode tokens/s means little{overall_text}. Send more requests (--requests), a lower load, or a smaller --warmup."
    )
