"""Request metrics on hand-made requests, at their window and SLO boundaries (`runtime/metrics.py`)."""

from __future__ import annotations

import pytest

from runtime.metrics import (
    decode_throughput_tokens_per_s,
    mean_in_system,
    measured_requests,
    measurement_window_s,
    slo_attainment,
    tbt_gaps_s,
    ttfts_s,
    type_composition,
    warmup_cut_s,
)
from runtime.request import Request
from runtime.step_log import StepLog


def _done(rid, arrival_s, token_times, slo=None):
    r = Request(rid, arrival_s, 4, len(token_times) - 1, tbt_slo_s=slo)
    r.token_times_s.extend(token_times)
    r.completion_s = token_times[-1]
    return r


def test_measured_requests_start_at_the_cut_inclusive():
    a, b = _done(0, 1.0, [2.0, 3.0]), _done(1, 2.0, [3.0, 4.0])
    running = Request(2, 3.0, 4, 2)
    assert measured_requests([a, b, running], warmup_s=2.0) == [b]
    assert measured_requests([a, b, running]) == [a, b]


def test_warmup_cut_and_window():
    reqs = [_done(0, 0.0, [1.0, 2.0]), _done(1, 10.0, [11.0, 12.0])]
    assert warmup_cut_s(reqs, 0.2) == 2.0
    assert warmup_cut_s(reqs, 0.2, horizon_s=5.0) == 1.0  # the span ends at the horizon
    assert measurement_window_s(reqs, 12.0, 2.0) == (2.0, 10.0)  # cut to the last arrival
    assert measurement_window_s(reqs, 12.0, 10.0) == (10.0, 12.0)  # cut at the last arrival: to the end
    assert measurement_window_s(reqs, 12.0, 2.0, horizon_s=6.0) == (2.0, 6.0)


def test_decode_throughput_counts_tokens_in_the_closed_window():
    # the first token of each request is the prefill's and is not a decode token
    r = _done(0, 0.0, [1.0, 2.0, 3.0, 4.0])
    assert decode_throughput_tokens_per_s([r], 2.0, 4.0) == 3 / 2.0  # 2.0 and 4.0 included
    assert decode_throughput_tokens_per_s([r], 2.5, 3.5) == 1 / 1.0
    assert decode_throughput_tokens_per_s([r], 1.0, 1.0) == 0.0  # an empty window


def test_latency_parts_by_hand():
    r = _done(0, 0.5, [1.0, 1.5, 2.5])
    assert list(ttfts_s([r, Request(1, 0.0, 4, 2)])) == [0.5]
    assert list(tbt_gaps_s([r])) == [0.5, 1.0]
    assert len(tbt_gaps_s([Request(1, 0.0, 4, 2)])) == 0


def test_slo_attainment_counts_a_gap_equal_to_the_slo_as_met():
    on_time = _done(0, 0.0, [1.0, 1.5, 2.0], slo=0.5)  # gaps 0.5, 0.5: exactly the SLO
    late = _done(1, 0.0, [1.0, 1.5, 2.5], slo=0.5)  # gaps 0.5, 1.0
    free = _done(2, 0.0, [3.0, 4.0])  # no SLO: not counted
    out = slo_attainment([on_time, late, free], ttft_slo_s=1.0)
    assert out["tbt_slo_requests"] == 2
    assert out["tbt_slo_attainment"] == 0.5 and out["tbt_slo_token_attainment"] == 3 / 4
    assert out["ttft_slo_attainment"] == pytest.approx(2 / 3)  # TTFT 1.0 ≤ 1.0 twice, 3.0 once
    assert slo_attainment([free])["tbt_slo_attainment"] is None


def test_mean_in_system_and_type_composition():
    a = _done(0, 0.0, [1.0, 4.0])  # in the system over [0, 4]
    b = Request(1, 2.0, 4, 3)  # never finishes: counted to the stop
    assert mean_in_system([a, b], 1.0, 5.0) == pytest.approx((3.0 + 3.0) / 4.0)
    log = StepLog(type_counts=[{"x": 2}, {"x": 1, "y": 3}])
    assert type_composition(log) == {"x": 1.5, "y": 1.5}
    assert type_composition(StepLog()) is None
