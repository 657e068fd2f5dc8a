"""Metrics as pure functions, on requests and steps whose answers are known by hand."""

from __future__ import annotations

import numpy as np
import pytest

from fluid.batch_time import BatchShape
from runtime.metrics import (
    decode_throughput_tokens_per_s,
    measurement_window_s,
    mean_in_system,
    slo_attainment,
    step_metrics,
    summarize,
    tbt_gaps_s,
)
from runtime.request import Request
from runtime.sim import SimResult, StepLog


def _finished(rid, arrival, token_times, slo=None, restarts=0):
    r = Request(rid, arrival, 10, len(token_times) - 1, "t", slo)
    r.token_times_s = list(token_times)
    r.decode_steps_done = r.output_tokens
    r.completion_s = token_times[-1]
    r.restarts = restarts
    return r


def _requests():
    return [
        _finished(0, 0.0, [1.0, 1.1, 1.3], slo=0.15),  # gaps 0.1, 0.2
        _finished(1, 2.0, [2.5, 2.6, 2.7, 2.8], slo=0.15, restarts=2),  # gaps 0.1 ×3
        _finished(2, 4.0, [4.2, 5.2]),  # gap 1.0, no SLO
    ]


def test_latency_ttft_tbt_exact():
    reqs = _requests()
    steps = StepLog()
    steps.append(0.0, 5.2, BatchShape(3, 30, 2, 1), 48, 0)
    s = summarize(SimResult(reqs, 5.2, 1, 48, steps, 100), scheduler="x", warmup_s=0.0, ttft_slo_s=0.6)
    lat = np.array([1.3, 0.8, 1.2])
    assert s.mean_latency_s == pytest.approx(lat.mean())
    assert s.p50_latency_s == pytest.approx(1.2)
    assert s.p99_latency_s == pytest.approx(np.percentile(lat, 99))
    assert s.mean_ttft_s == pytest.approx((1.0 + 0.5 + 0.2) / 3)
    gaps = np.array([0.1, 0.2, 0.1, 0.1, 0.1, 1.0])
    assert np.sort(tbt_gaps_s(reqs)) == pytest.approx(np.sort(gaps))
    assert s.p99_tbt_s == pytest.approx(np.percentile(gaps, 99))
    assert s.max_tbt_s == pytest.approx(1.0)
    assert s.restarts == 2 and s.completed == 3
    assert s.restarted_requests == 1  # request 1, restarted twice, counts once
    assert s.scheduler == "x" and s.executor == "simulated"
    assert s.ttft_slo_attainment == pytest.approx(2 / 3)  # 1.0 s misses 0.6 s


def test_slo_attainment_by_request_and_token():
    out = slo_attainment(_requests())
    assert out["tbt_slo_requests"] == 2
    assert out["tbt_slo_attainment"] == pytest.approx(0.5)  # request 0 has a 0.2 s gap
    assert out["tbt_slo_token_attainment"] == pytest.approx(4 / 5)


def test_throughput_window_and_warmup():
    reqs = _requests()
    start, stop = measurement_window_s(reqs, end_s=5.2, warmup_s=1.0)
    assert (start, stop) == (1.0, 4.0)  # to the last arrival
    # decode tokens (not first tokens) inside [1, 4]: 1.1, 1.3, 2.6, 2.7, 2.8
    assert decode_throughput_tokens_per_s(reqs, start, stop) == pytest.approx(5 / 3)
    s = summarize(SimResult(reqs, 5.2, 0, 0, StepLog(), 100), scheduler="x", warmup_s=1.0)
    assert s.measured_requests == 2  # request 0 arrived before the cut
    assert s.decode_throughput_tokens_per_s == pytest.approx(5 / 3)


def test_step_metrics_composition_and_kv():
    steps = StepLog()
    steps.append(0.0, 1.0, BatchShape(100, 100, 0, 1), 112, 0)  # prefill only
    steps.append(1.0, 4.0, BatchShape(3, 330, 2, 1), 160, 1)  # mixed
    steps.append(4.0, 5.0, BatchShape(2, 220, 2, 0), 32, 0)  # decode only
    m = step_metrics(steps, 200)
    assert m["num_steps"] == 3 and m["max_batch_size"] == 3
    assert m["mean_batch_size"] == pytest.approx((1 + 3 + 2) / 3)
    assert m["mixed_step_fraction"] == pytest.approx(1 / 3)
    assert m["peak_kv_tokens"] == 160
    assert m["mean_kv_tokens"] == pytest.approx((112 * 1 + 160 * 3 + 32 * 1) / 5)
    assert m["evictions"] == 1
    assert m["busy_s"] == 5.0 and m["mean_step_s"] == pytest.approx(5 / 3)
    assert m["mean_decodes_per_step"] == pytest.approx(4 / 3) and m["mean_prefills_per_step"] == pytest.approx(2 / 3)
    # no decode in the first step, no prefill in the last
    assert m["prefill_only_step_fraction"] == pytest.approx(1 / 3) and m["decode_only_step_fraction"] == pytest.approx(1 / 3)
    assert m["prefill_token_fraction"] == pytest.approx((100 + 1 + 0) / 105)  # new tokens less one per decode
    assert m["kv_capacity_tokens"] == 200


def test_summary_counts_decode_tokens_and_request_steps_by_hand():
    reqs = _requests()
    for r, chunks in zip(reqs, ([1.0], [2.3, 2.5], [4.2])):  # request 1 prefilled in two chunks
        r.prefill_chunk_end_s = chunks
    s = summarize(SimResult(reqs, 5.2, 0, 0, StepLog(), 100), scheduler="x", warmup_s=0.0)
    # every token after each request's first is a decode token: 2 + 3 + 1 over the whole run
    assert s.overall_decode_throughput_tokens_per_s == pytest.approx(6 / 5.2)
    # a request's steps: its prefill chunks plus its decode steps, (1 + 2) + (2 + 3) + (1 + 1)
    assert s.request_steps == 10


def test_prefill_token_fraction_of_a_one_token_prefill_is_one():
    steps = StepLog()
    steps.append(0.0, 1.0, BatchShape(1, 1, 0, 1), 16, 0)  # a one-token prompt, nothing decoding
    assert step_metrics(steps, 64)["prefill_token_fraction"] == 1.0
    steps.append(1.0, 2.0, BatchShape(1, 2, 1, 0), 16, 0)  # then its single decode token
    assert step_metrics(steps, 64)["prefill_token_fraction"] == 0.5


def test_mean_in_system():
    reqs = _requests()
    # in [0, 5.2]: sojourns 1.3 + 0.8 + 1.2 = 3.3
    assert mean_in_system(reqs, 0.0, 5.2) == pytest.approx(3.3 / 5.2)


def test_step_metrics_of_an_empty_log_are_zero_not_one():
    from runtime.metrics import step_metrics

    out = step_metrics(StepLog(), 64)
    assert (out["num_steps"], out["peak_kv_tokens"], out["mean_kv_tokens"], out["evictions"]) == (0, 0, 0.0, 0)
    assert out["kv_capacity_tokens"] == 64 and out["max_batch_size"] == 0
    # every value pinned: no busy time, no means or fractions over no steps
    assert out == {
        "num_steps": 0, "busy_s": 0.0, "mean_step_s": None, "mean_batch_size": None, "max_batch_size": 0,
        "mean_decodes_per_step": None, "mean_prefills_per_step": None, "mixed_step_fraction": None,
        "prefill_only_step_fraction": None, "decode_only_step_fraction": None, "prefill_token_fraction": None,
        "peak_kv_tokens": 0, "mean_kv_tokens": 0.0, "kv_capacity_tokens": 64, "evictions": 0,
    }
    one = StepLog()
    one.append(0.0, 1.0, BatchShape(1, 1, 0, 1), 16, 0)
    assert set(step_metrics(one, 64)) == set(out)  # the same keys as a log with steps


def test_request_rows_by_hand_for_a_finished_typed_request_and_an_unstarted_untyped_one():
    from runtime.metrics import request_rows

    done = _finished(0, 0.5, [1.0, 1.25, 1.75], slo=0.3, restarts=1)  # gaps 0.25, 0.5
    done.first_scheduled_s, done.prefill_chunk_end_s, done.tier = 0.75, [0.9, 1.0], 2
    waiting = Request(1, 2.0, 7, 4)  # no type, never scheduled
    rows = request_rows([done, waiting])
    assert rows[0] == {
        "request_id": 0, "type": "t", "tier": 2, "prompt_tokens": 10, "output_tokens": 2, "arrival_s": 0.5,
        "first_scheduled_s": 0.75, "first_token_s": 1.0, "completion_s": 1.75, "ttft_s": 0.5, "latency_s": 1.25,
        "mean_tbt_s": 0.375, "max_tbt_s": 0.5, "decode_tokens": 2, "prefill_chunks": 2, "restarts": 1, "tbt_slo_s": 0.3,
    }
    assert rows[1] == {
        "request_id": 1, "type": "", "tier": 0, "prompt_tokens": 7, "output_tokens": 4, "arrival_s": 2.0,
        "first_scheduled_s": None, "first_token_s": None, "completion_s": None, "ttft_s": None, "latency_s": None,
        "mean_tbt_s": None, "max_tbt_s": None, "decode_tokens": 0, "prefill_chunks": 0, "restarts": 0, "tbt_slo_s": None,
    }
    one = Request(2, 0.0, 3, 1, "u")
    one.token_times_s = [0.5]  # its first token only: no gap yet
    row = request_rows([one])[0]
    assert (row["type"], row["first_token_s"], row["ttft_s"], row["mean_tbt_s"], row["decode_tokens"]) == ("u", 0.5, 0.5, None, 0)


def test_summary_of_a_run_shorter_than_a_second_by_hand():
    # two requests: latencies 0.4 and 0.5 s, TTFTs 0.1 and 0.2 s, gaps 0.1, 0.2 and 0.3 s, run end 0.8 s
    reqs = [_finished(0, 0.0, [0.1, 0.2, 0.4]), _finished(1, 0.1, [0.3, 0.6])]
    s = summarize(SimResult(reqs, 0.8, 0, 0, StepLog(), 100), scheduler="x", warmup_s=0.0)
    assert s.overall_decode_throughput_tokens_per_s == pytest.approx(3 / 0.8)  # 2 + 1 decode tokens
    assert (s.mean_latency_s, s.p50_latency_s, s.p90_latency_s, s.p99_latency_s) == pytest.approx((0.45, 0.45, 0.49, 0.499))
    assert (s.mean_ttft_s, s.p50_ttft_s, s.p99_ttft_s) == pytest.approx((0.15, 0.15, 0.199))
    # gaps sorted 0.1, 0.2, 0.3: p90 sits 0.8 of the way from 0.2 to 0.3 (linear interpolation)
    assert (s.mean_tbt_s, s.p50_tbt_s, s.p90_tbt_s, s.p99_tbt_s, s.max_tbt_s) == pytest.approx((0.2, 0.2, 0.28, 0.298, 0.3))
    # the throughput window runs from 0 to the last arrival, 0.1 s: the decode token at 0.2 s is
    # outside it, so none counts
    assert (s.window_start_s, s.window_stop_s, s.decode_throughput_tokens_per_s) == (0.0, 0.1, 0.0)
    empty = summarize(SimResult([], 0.0, 0, 0, StepLog(), 100), scheduler="x")
    assert empty.overall_decode_throughput_tokens_per_s == 0.0 and empty.mean_latency_s is None


def test_overall_decode_throughput_counts_no_decode_token_for_a_request_with_one_token_or_none():
    # over the whole run (end 4 s): a request of two tokens has one decode token; one that got its
    # first token only (a prefill of an output-1 request, or cut off by the horizon) has none, and so
    # has one never scheduled (no token at all, not −1): 1 decode token / 4 s
    two = _finished(0, 0.0, [1.0, 1.5])
    first_only = Request(1, 0.5, 10, 3, "t")
    first_only.token_times_s = [2.0]
    never = Request(2, 3.0, 10, 3, "t")
    s = summarize(SimResult([two, first_only, never], 4.0, 0, 0, StepLog(), 100), scheduler="x", warmup_s=0.0)
    assert s.overall_decode_throughput_tokens_per_s == 0.25
    alone = summarize(SimResult([first_only], 4.0, 0, 0, StepLog(), 100), scheduler="x", warmup_s=0.0)
    assert alone.overall_decode_throughput_tokens_per_s == 0.0


def test_decode_throughput_counts_the_one_decode_token_of_a_two_token_request_inside_the_window():
    r = _finished(0, 0.0, [1.0, 2.0])  # its first token at 1.0 is the prefill's, its decode token at 2.0
    assert decode_throughput_tokens_per_s([r], 0.0, 4.0) == pytest.approx(1 / 4)
    assert decode_throughput_tokens_per_s([r], 2.0, 4.0) == pytest.approx(1 / 2)  # a token at the start counts
    assert decode_throughput_tokens_per_s([r], 0.0, 2.0) == pytest.approx(1 / 2)  # and one at the stop
    assert decode_throughput_tokens_per_s([r], 2.5, 4.0) == 0.0


def test_warmup_cut_of_no_requests_is_zero():
    from runtime.metrics import warmup_cut_s

    assert warmup_cut_s([], 0.5) == 0.0 and warmup_cut_s([], 0.5, horizon_s=3.0) == 0.0
    assert measurement_window_s([], end_s=2.0, warmup_s=0.0) == (0.0, 2.0)  # no arrival span: to the end


def test_a_request_with_two_token_times_has_one_gap_in_its_row():
    from runtime.metrics import request_rows

    r = Request(0, 0.0, 4, 2)
    r.token_times_s = [1.0, 1.25]
    r.completion_s = 1.25
    one = Request(1, 0.0, 4, 1)
    one.token_times_s, one.completion_s = [2.0], 2.0
    rows = request_rows([r, one])
    assert (rows[0]["mean_tbt_s"], rows[0]["max_tbt_s"], rows[0]["decode_tokens"]) == (0.25, 0.25, 1)
    assert (rows[1]["mean_tbt_s"], rows[1]["max_tbt_s"], rows[1]["decode_tokens"]) == (None, None, 0)


def test_tbt_slo_attainment_counts_the_requests_whose_every_gap_meets_it():
    from runtime.metrics import slo_attainment

    def req(rid, times):
        r = Request(rid, 0.0, 4, len(times), tbt_slo_s=0.125)
        r.token_times_s, r.completion_s = times, times[-1]
        return r

    # two requests meet 0.125 s at every gap (request 0 exactly), one misses one gap of three: 2/3
    # of requests, 8/9 of gaps (binary fractions: the gaps are exact)
    rs = [req(0, [1.0, 1.125, 1.25, 1.375]), req(1, [1.0, 1.0625, 1.125, 1.25]), req(2, [1.0, 1.125, 1.5, 1.625])]
    out = slo_attainment(rs)
    assert out["tbt_slo_requests"] == 3 and out["tbt_slo_attainment"] == pytest.approx(2 / 3)
    assert out["tbt_slo_token_attainment"] == pytest.approx(8 / 9)
