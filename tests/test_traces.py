"""Trace readers, rate profiles and binning a length trace into request types."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.errors import InputError
from fluid.trace_binning import decode_bin_edges, types_from_lengths
from fluid.traces import TRACE_DIR, load_length_trace, load_timestamp_trace, rate_profile, resolve_trace_path
from fluid.workload_io import load_workload

SHAREGPT = "builtin:sharegpt_8k_filtered_stats_llama2_tokenizer.csv"
AZURE = "builtin:AzureLLMInferenceTrace_conv.csv"


def test_shipped_traces_keep_their_notices_and_stay_small():
    names = {p.name for p in TRACE_DIR.iterdir()}
    assert {"NOTICE-sarathi-serve", "NOTICE-azure-llm-inference-2023", "README"} <= names
    assert "Splitwise" in (TRACE_DIR / "NOTICE-azure-llm-inference-2023").read_text()
    data_dir = TRACE_DIR.parent
    assert sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file()) < 3 * 2**20


def test_length_trace_reader():
    t = load_length_trace(SHAREGPT)
    assert len(t) == 30731
    assert (t.prompt_tokens[:2] == [74, 290]).all() and (t.output_tokens[:2] == [918, 905]).all()
    assert np.median(t.prompt_tokens) == 1730 and np.median(t.output_tokens) == 415


def test_rate_profile_by_hand_with_an_arrival_on_a_bin_edge():
    from fluid.traces import TimestampTrace

    ones = np.ones(5, dtype=np.int64)
    trace = TimestampTrace("hand", ones, ones, np.array([0.0, 1.0, 5.0, 8.0, 8.5]))
    t_s, rate = rate_profile(trace, 4.0)
    # 8.5 s of arrivals in bins of 4 s: [0, 4), [4, 8), [8, 12); the arrival at 8.0 opens the third
    assert t_s.tolist() == [0.0, 4.0, 8.0]
    assert rate.tolist() == [2 / 4, 1 / 4, 2 / 4]
    t_s, rate = rate_profile(trace, 8.5)  # one bin exactly as long as the trace: its end opens a second
    assert t_s.tolist() == [0.0, 8.5] and rate.tolist() == [4 / 8.5, 1 / 8.5]


def test_duration_is_the_span_from_first_to_last_arrival_and_the_rate_counts_over_it():
    from fluid.traces import TimestampTrace

    ones = np.ones(3, dtype=np.int64)
    late = TimestampTrace("late start", ones, ones, np.array([2.0, 3.0, 5.0]))  # need not start at 0
    assert late.duration_s == 3.0 and late.mean_rate_per_s == 1.0
    together = TimestampTrace("one instant", ones, ones, np.array([4.0, 4.0, 4.0]))
    assert together.duration_s == 0.0 and together.mean_rate_per_s == float("inf")  # no span: no finite rate
    none = TimestampTrace("empty", ones[:0], ones[:0], np.array([]))
    assert none.duration_s == 0.0


def test_rate_profile_bins_may_be_shorter_than_a_second_but_not_empty():
    from fluid.traces import TimestampTrace

    ones = np.ones(3, dtype=np.int64)
    trace = TimestampTrace("hand", ones, ones, np.array([0.0, 0.25, 1.0]))
    t_s, rate = rate_profile(trace, 0.5)  # [0, 0.5), [0.5, 1), [1, 1.5): the arrival at 1.0 opens the third
    assert t_s.tolist() == [0.0, 0.5, 1.0] and rate.tolist() == [4.0, 0.0, 2.0]
    for bad in (0.0, -1.0):
        with pytest.raises(InputError, match="must be a finite positive number of seconds") as info:
            rate_profile(trace, bad)
        assert info.value.field == "bin_s"


def test_rate_profile_counts_bins_by_floor_division_like_the_arrivals():
    from fluid.traces import TimestampTrace

    # 0.1 as a float is a hair above 1/10: 1.0 // 0.1 = 9 (the float quotient 1.0 / 0.1 rounds to 10),
    # so 1.0 s of arrivals fill 10 bins of "0.1 s" and the last arrival is in bin 9, as its index
    # 1.0 // 0.1 says; 0.5 // 0.1 = 4 likewise. No eleventh, empty bin at 1.0 s
    ones = np.ones(3, dtype=np.int64)
    t_s, rate = rate_profile(TimestampTrace("hand", ones, ones, np.array([0.0, 0.5, 1.0])), 0.1)
    assert len(t_s) == 10 and t_s[-1] == 9 * 0.1
    assert rate.tolist() == [10.0, 0.0, 0.0, 0.0, 10.0, 0.0, 0.0, 0.0, 0.0, 10.0]


def test_timestamp_trace_and_rate_profile():
    t = load_timestamp_trace(AZURE)
    assert len(t) == 19366 and t.arrival_s[0] == 0.0
    assert (np.diff(t.arrival_s) >= 0).all()
    # first two rows: 18:15:46.6805900 and 18:15:50.9951690
    assert t.arrival_s[1] == pytest.approx(4.314579, abs=1e-6)
    assert t.duration_s == pytest.approx(3502, abs=1)
    t_s, rate = rate_profile(t, 60.0)
    assert t_s[0] == 0 and np.allclose(np.diff(t_s), 60.0)
    assert (rate * 60.0).sum() == pytest.approx(len(t))
    assert rate.mean() == pytest.approx(t.mean_rate_per_s, rel=0.05)


def test_length_trace_from_a_timestamped_file_and_the_reverse_error():
    assert len(load_length_trace(AZURE)) == 19366
    with pytest.raises(InputError, match="no arrival-time column"):
        load_timestamp_trace(SHAREGPT)


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        ("num_prefill_tokens,num_decode_tokens\n10,5\n12,x\n", 3, "num_decode_tokens"),
        ("num_prefill_tokens,num_decode_tokens\n10,5\n0,4\n", 3, "positive"),
        ("num_prefill_tokens,num_decode_tokens\n10,5\n7\n", 3, "expected 2"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:01,1,2\n2023-11-16 18:00:00,3,4\n", 3, "sort"),
        ("TIMESTAMP,ContextTokens,GeneratedTokens\nyesterday,1,2\n", 2, "TIMESTAMP"),
        ("a,b\n1,2\n", 1, "unknown trace columns"),
        ("num_prefill_tokens,num_decode_tokens\n", 2, "no request rows"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, text, line, fragment):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(InputError) as info:
        load_timestamp_trace(path) if "TIMESTAMP" in text else load_length_trace(path)
    assert f"{path}:{line}" in str(info.value) and fragment in str(info.value)


def test_unknown_builtin_lists_the_builtins():
    with pytest.raises(InputError, match="AzureLLMInferenceTrace_conv.csv"):
        resolve_trace_path("builtin:nope.csv")


def test_a_builtin_name_with_a_slash_is_refused_even_when_it_reaches_a_file():
    # builtin:NAME names a file in fluid/data/traces/ itself: no way out of (or back into) the folder
    assert resolve_trace_path(AZURE) == TRACE_DIR / "AzureLLMInferenceTrace_conv.csv"
    with pytest.raises(InputError, match="no built-in trace '../traces/AzureLLMInferenceTrace_conv.csv'") as info:
        resolve_trace_path("builtin:../traces/AzureLLMInferenceTrace_conv.csv")
    assert info.value.field == "trace"


def test_one_token_lengths_stay_one_token_types():
    # decode lengths 1, 1, 5, 5 in two equal-width bins [1, 4) and [4, 6); prompts 1, 1 | 1, 2
    from fluid.workload import RequestType

    types = types_from_lengths(np.array([1, 1, 1, 2]), np.array([1, 1, 5, 5]), bins=2, total_rate_per_s=4.0)
    assert types == (RequestType("d1-3", 1, 1, 2.0), RequestType("d4-5", 2, 5, 2.0))  # 1.5 rounds to 2
    median = types_from_lengths(np.array([1, 1, 1, 2]), np.array([1, 1, 5, 5]), bins=2, total_rate_per_s=4.0,
                                prefill="median", tbt_slo_s=0.1)
    assert median == (RequestType("d1-3", 1, 1, 2.0, 0.1), RequestType("d4-5", 1, 5, 2.0, 0.1))


def test_equal_width_bins_match_the_papers_chat_classes():
    decode = np.arange(1, 501)
    assert decode_bin_edges(decode, 10, "equal-width").tolist() == list(range(1, 502, 50))
    types = types_from_lengths(np.full(500, 60), decode, bins=10, total_rate_per_s=55.0)
    assert [t.name for t in types][:2] == ["d1-50", "d51-100"]
    assert all(t.prefill == 60 for t in types)
    assert types[0].decode == 26  # mean of 1..50 is 25.5; round() goes half to even
    assert sum(t.rate_per_s for t in types) == pytest.approx(55.0)


@settings(max_examples=40, deadline=None)
@given(
    decode=st.lists(st.integers(1, 5000), min_size=1, max_size=400),
    bins=st.integers(1, 30),
    binning=st.sampled_from(["equal-width", "quantile"]),
    total=st.floats(0.01, 1e4),
)
def test_binning_conserves_rate_and_counts(decode, bins, binning, total):
    decode = np.array(decode)
    prompt = (decode * 7) % 1000 + 1
    edges = decode_bin_edges(decode, bins, binning)
    assert edges[0] == decode.min() and edges[-1] == decode.max() + 1
    counts = np.histogram(decode, bins=edges)[0]
    assert counts.sum() == len(decode)  # every row lands in exactly one bin
    types = types_from_lengths(prompt, decode, bins=bins, binning=binning, total_rate_per_s=total)
    assert len(types) == (counts > 0).sum() <= bins
    assert sum(t.rate_per_s for t in types) == pytest.approx(total, rel=1e-9)
    rows = sorted(round(t.rate_per_s / total * len(decode)) for t in types)
    assert rows == sorted(counts[counts > 0].tolist())
    for t in types:  # decode length sits inside the bin its name gives
        lo, hi = map(int, t.name[1:].split("-"))
        assert lo <= t.decode <= hi


def test_prefill_rules():
    prompt = np.array([10, 20, 30, 1000])
    decode = np.array([1, 1, 100, 100])
    per_bin = types_from_lengths(prompt, decode, bins=2, total_rate_per_s=1.0)
    assert [t.prefill for t in per_bin] == [15, 515]
    mean = types_from_lengths(prompt, decode, bins=2, total_rate_per_s=1.0, prefill="mean")
    assert {t.prefill for t in mean} == {265}
    median = types_from_lengths(prompt, decode, bins=2, total_rate_per_s=1.0, prefill="median")
    assert {t.prefill for t in median} == {25}


def test_trace_presets_take_their_types_from_the_traces():
    w = load_workload("sharegpt-slai")
    assert len(w.types) == 10 and all(t.tbt_slo_s == 0.2 for t in w.types)
    assert sum(t.rate_per_s for t in w.types) == pytest.approx(1.75)
    a = load_workload("azure-conv")
    assert a.arrivals.kind == "trace"
    assert sum(t.rate_per_s for t in a.types) == pytest.approx(load_timestamp_trace(AZURE).mean_rate_per_s)


def test_types_from_trace_errors(tmp_path):
    path = tmp_path / "w.yaml"
    base = "name: x\nkv_capacity_tokens: 1000\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-7}\n"
    path.write_text(base + f"types_from_trace: {{path: {SHAREGPT}, bins: 4, binning: quantiles}}\n")
    with pytest.raises(InputError, match=r"types_from_trace\.binning.*quantiles"):
        load_workload(path)
    path.write_text(base + f"types_from_trace: {{path: {SHAREGPT}, bins: 4}}\n")
    with pytest.raises(InputError, match="total_rate_per_s"):
        load_workload(path)
    path.write_text(base + "types_from_trace: {path: lengths.csv, bins: 4, total_rate_per_s: 1.0}\n")
    (tmp_path / "lengths.csv").write_text("num_prefill_tokens,num_decode_tokens\n5,1\n5,9\n")
    w = load_workload(path)  # relative to the workload file
    assert sum(t.rate_per_s for t in w.types) == pytest.approx(1.0)


def test_quantile_bin_edges_by_hand():
    # decode 1..4, two quantile bins: quantiles 1, 2.5, 4 → edges ⌈·⌉ = 1, 3 and the top max + 1 = 5
    assert decode_bin_edges(np.array([1, 2, 3, 4]), 2, "quantile").tolist() == [1, 3, 5]


def test_trace_references_resolve_against_the_workload_folder_and_builtins_stay_portable(tmp_path, monkeypatch):
    from fluid.traces import trace_reference

    (tmp_path / "sub").mkdir()
    trace = tmp_path / "sub" / "t.csv"
    trace.write_text("num_prefill_tokens,num_decode_tokens\n1,2\n")
    ref = lambda value, base: trace_reference(value, base_dir=base, source="w.yaml", field="f")  # noqa: E731
    assert ref("sub/t.csv", tmp_path) == str(trace.resolve())
    assert ref(str(trace), tmp_path / "elsewhere") == str(trace.resolve())  # an absolute path ignores the folder
    monkeypatch.chdir(tmp_path / "sub")
    assert ref("t.csv", None) == str(trace.resolve())  # no folder: relative to the working directory
    assert ref(AZURE, tmp_path) == AZURE  # builtin:NAME is kept as written
    for bad, fragment in [("", "must be a trace file path or builtin:NAME, got ''"), (3, "got 3"),
                          ("builtin:nope.csv", "no built-in trace 'nope.csv'"),
                          ("t.csv", "trace file 't.csv' not found (looked at")]:
        with pytest.raises(InputError, match=re.escape(fragment)) as info:
            ref(bad, tmp_path)
        assert info.value.field == "f" and info.value.source == "w.yaml"


def test_types_from_trace_dict_takes_a_timestamped_traces_own_rate_and_checks_each_key(tmp_path):
    from fluid.trace_binning import types_from_trace_dict
    from fluid.workload import RequestType

    (tmp_path / "t.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n4.0,20,7\n")
    (tmp_path / "z.csv").write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n3.0,10,5\n3.0,20,7\n")
    (tmp_path / "l.csv").write_text("num_prefill_tokens,num_decode_tokens\n5,1\n5,9\n")
    build = lambda data: types_from_trace_dict(data, source="w.yaml", base_dir=tmp_path)  # noqa: E731
    # 2 requests over a 4 s span: 0.5 requests/s, one bin of decode 5..7 with mean lengths 15, 6
    assert build({"path": "t.csv", "bins": 1}) == (RequestType("d5-7", 15, 6, 0.5),)
    two = build({"path": "l.csv", "bins": 2, "total_rate_per_s": 1.0, "tbt_slo_s": 0.2, "prefill": "mean", "binning": "quantile"})
    assert two == (RequestType("d1-4", 5, 1, 0.5, 0.2), RequestType("d5-9", 5, 9, 0.5, 0.2))
    for data, field, fragment in [
        ({"path": "z.csv", "bins": 1}, "types_from_trace", "the trace spans no time, so it has no rate; give total_rate_per_s"),
        ({"path": "l.csv", "bins": 1}, "types_from_trace", "missing total_rate_per_s; only a timestamped trace"),
        ({"path": "l.csv", "bins": 1, "tokenizer": "tok"}, "types_from_trace.tokenizer", "tokenizer applies to a raw ShareGPT .json trace only"),
        ({"path": "l.csv", "bins": 1, "by": "prefill", "total_rate_per_s": 1.0}, "types_from_trace.by", "must be one of decode, got 'prefill'"),
        ({"path": "l.csv", "bins": 1, "prefill": "max", "total_rate_per_s": 1.0}, "types_from_trace.prefill", "must be one of per-bin, mean, median"),
        ({"path": "l.csv", "bins": 0, "total_rate_per_s": 1.0}, "types_from_trace.bins", "must be a positive integer number of bins, got 0"),
        ({"path": "l.csv", "bins": 2, "total_rate_per_s": 1.0, "tbt_slo_s": 0.0}, "types_from_trace.tbt_slo_s", "got 0.0"),
        ({"path": "l.csv", "bins": 2, "total_rate_per_s": 0}, "types_from_trace.total_rate_per_s", "got 0"),
    ]:
        with pytest.raises(InputError, match=re.escape(fragment)) as info:
            build(data)
        assert info.value.field == field and info.value.source == "w.yaml"
