"""Batch-time models: staircase, profile, dict round trips, least-squares fits, linearisation."""

from __future__ import annotations

import csv
import random

import pytest

from fluid.batch_time import (
    AffineBatchTime,
    BatchShape,
    Linear3BatchTime,
    ProfileBatchTime,
    StaircaseBatchTime,
    batch_time_from_dict,
    fit_linear,
)
from fluid.batch_time_fit import OPERATING_SHAPES, linearise
from fluid.batch_time_profile import DEFAULT_ATTN_S_PER_KV_TOKEN, read_mlp_csv, resolve_profile_path
from fluid.errors import InputError

MLP = "builtin:a100_llama-2-7b_mlp.csv"


def decode_batch(num_decodes: int, context_tokens: int) -> BatchShape:
    return BatchShape(num_decodes, num_decodes * (context_tokens + 1), num_decodes, 0)


@pytest.fixture(scope="module")
def profile() -> ProfileBatchTime:
    return ProfileBatchTime.from_mlp_csv(MLP, num_layers=32)


def test_staircase_steps_at_tile_edges():
    m = StaircaseBatchTime(11.28e-3, 35.47e-3, 128)
    t = [m.step_time_s(BatchShape(n, 0, n, 0)) for n in (1, 128, 129, 256, 257)]
    assert t[0] == t[1] == pytest.approx(11.28e-3 + 35.47e-3)
    assert t[2] == t[3] == pytest.approx(11.28e-3 + 2 * 35.47e-3)
    assert t[4] == pytest.approx(11.28e-3 + 3 * 35.47e-3)


def test_staircase_linearisation_slope_is_a_per_tile_token():
    m = StaircaseBatchTime(11.28e-3, 35.47e-3, 128)
    d0, d_kv, d_new = m.linear_coefficients()
    assert d_kv == pytest.approx(0.0, abs=1e-12)  # KV tokens do not enter the staircase
    assert d_new == pytest.approx(35.47e-3 / 128, rel=0.15)
    assert d0 > 11.28e-3


def test_profile_reads_the_table_by_column_name(profile):
    # 1-token row of the A100 Llama-2-7B profile: 32 x (per-layer medians) + embedding = 9.283 ms
    assert profile.num_tokens[0] == 1
    assert profile.non_attention_s[0] == pytest.approx(9.283e-3, rel=1e-6)
    # by hand from the CSV's 4096-token row, columns found by name
    with open(resolve_profile_path(MLP), newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["num_tokens"] == "4096" and r["num_tensor_parallel_workers"] == "1"]
    ops = ["input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj", "post_attention_layernorm"]
    ops += ["mlp_up_proj", "mlp_act", "mlp_down_proj", "add"]
    totals = [32 * sum(float(r[f"time_stats.{op}.median"]) for op in ops) + float(r["time_stats.emb.median"]) for r in rows]
    by_hand_s = sum(totals) / len(totals) / 1e3  # the profile repeats 4096: rows are averaged
    assert profile.non_attention_s[profile.num_tokens.index(4096)] == pytest.approx(by_hand_s, rel=1e-9)
    n1, t1 = read_mlp_csv(MLP, num_layers=1)
    n2, t2 = read_mlp_csv(MLP, num_layers=2)
    assert n1 == profile.num_tokens
    assert t1[0] + 31 * (t2[0] - t1[0]) == pytest.approx(profile.non_attention_s[0])


def test_profile_is_monotone_in_kv_and_broadly_in_tokens(profile):
    small, large = profile.step_time_s(decode_batch(8, 512)), profile.step_time_s(decode_batch(8, 2048))
    assert large - small == pytest.approx(8 * 1536 * DEFAULT_ATTN_S_PER_KV_TOKEN)
    times = [profile.step_time_s(BatchShape(n, 0, n, 0)) for n in (64, 256, 1024, 4096, 8192)]
    assert times == sorted(times)
    assert times[-1] > 1.8 * times[-2]  # linear extrapolation past the table's last point (4096)
    with_pairs = BatchShape(512, 512, 0, 1, prefill_attention_pairs=512 * 512)
    assert profile.step_time_s(with_pairs) > profile.step_time_s(BatchShape(512, 512, 0, 1))


def test_the_default_attention_terms_are_llama_2_7b_on_an_a100():
    # the shipped table's model and GPU: K and V bytes per cached token over 2.039 TB/s, and
    # 4·layers·hidden FLOPs per prefill (query, key) pair at half of 312 TFLOP/s (3.36 ns)
    from fluid.batch_time_profile import DEFAULT_ATTN_S_PER_PREFILL_PAIR
    from fluid.model_specs import model_spec

    spec = model_spec("llama-2-7b")
    assert DEFAULT_ATTN_S_PER_KV_TOKEN == pytest.approx(spec.kv_bytes_per_token / 2.039e12, rel=1e-12)
    assert DEFAULT_ATTN_S_PER_PREFILL_PAIR == pytest.approx(4 * spec.num_layers * spec.hidden_size / 156e12, rel=1e-12)
    assert DEFAULT_ATTN_S_PER_PREFILL_PAIR == pytest.approx(3.3608e-9, rel=1e-4)


def test_profile_extrapolates_with_its_upper_half_slope_by_hand():
    from fluid.batch_time_profile import ProfileBatchTime

    def beyond(num_tokens, times_s, new_tokens):
        m = ProfileBatchTime(num_tokens, times_s, attn_s_per_kv_token=0.0, attn_s_per_prefill_pair=0.0)
        return m.non_attention_time_s(new_tokens)

    # upper half [64, 128] of a table from 32: slope (3 − 2) ms / 64 tokens, 128 tokens past the end
    assert beyond((32, 64, 128), (1e-3, 2e-3, 3e-3), 256) == pytest.approx(3e-3 + 128 / 64 * 1e-3)
    # the upper half starts exactly at the first point: still measured, the whole table's slope
    assert beyond((64, 128), (1e-3, 2e-3), 256) == pytest.approx(2e-3 + 128 / 64 * 1e-3)
    # the upper half would start below the table (100 > 75): no measured slope, held flat
    assert beyond((100, 150), (1e-3, 2e-3), 300) == 2e-3


def test_profile_linearisation_is_close_to_the_presets_numbers(profile):
    d0, d_kv, d_new = profile.linear_coefficients()
    assert 5e-3 < d0 < 12e-3  # the profile's 1-token time is 9.3 ms
    assert 1e-7 < d_kv < 4e-7  # attention term 2.57e-7 s per KV token
    assert 3e-5 < d_new < 8e-5  # slope of the non-attention table
    # a linear fit of the profile's own predictions: within 15 % over the operating range
    report = fit_linear(((s, profile.step_time_s(s)) for s in OPERATING_SHAPES), kind="linear3")
    assert report.mape < 0.15 and report.r2 > 0.95


def test_linearise_is_memoised(profile):
    linearise.cache_clear()
    profile.linear_coefficients()
    profile.linear_coefficients()
    assert linearise.cache_info().hits >= 1


@pytest.mark.parametrize(
    "model",
    [
        AffineBatchTime(0.01, 1e-7),
        Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5),
        StaircaseBatchTime(0.011, 0.035, 128),
        ProfileBatchTime((1, 64, 512), (0.009, 0.0097, 0.033), 2e-7, 3e-12, 1e-4),
    ],
)
def test_to_dict_round_trips(model):
    assert batch_time_from_dict(model.to_dict(), source="rt") == model
    assert len(model.linear_coefficients()) == 3


def test_profile_from_csv_dict_matches_the_constructor(profile, tmp_path):
    built = batch_time_from_dict({"kind": "profile", "mlp_csv": MLP, "num_layers": 32}, source="x")
    assert built == profile
    assert batch_time_from_dict(built.to_dict(), source="x") == profile


@pytest.mark.parametrize(
    "data,field",
    [
        ({"kind": "linear3", "d0_s": 0.01, "d_kv_s_per_tokn": 1e-7}, "batch_time.d_kv_s_per_tokn"),
        ({"kind": "staircase", "c_s": 0.01, "a_s": 0.03, "tile_tokens": 0}, "batch_time.tile_tokens"),
        ({"kind": "profile", "mlp_csv": MLP}, "batch_time.num_layers"),
        ({"kind": "profile", "mlp_csv": "builtin:nope.csv", "num_layers": 2}, "batch_time.mlp_csv"),
        ({"kind": "profile", "table": {"num_tokens": [2, 1], "non_attention_s": [0.1, 0.2]}}, "batch_time.table.num_tokens"),
        ({"kind": "profile", "table": {"num_tokens": [1, 2]}}, "batch_time.table"),
        ({"kind": "quadratic"}, "batch_time.kind"),
        ([1, 2], "batch_time"),
    ],
)
def test_bad_batch_time_dicts(data, field):
    with pytest.raises(InputError) as info:
        batch_time_from_dict(data, source="file.yaml")
    assert "file.yaml" in str(info.value) and field in str(info.value)


def test_bad_mlp_csv_row_names_file_and_line(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n2,oops\n")
    with pytest.raises(InputError, match=rf"{path}:3"):
        read_mlp_csv(path, num_layers=2)


def _random_rows(model, n, seed=0):
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        shape = BatchShape(rng.randint(1, 2048), rng.randint(0, 200_000), rng.randint(0, 256), rng.randint(0, 4))
        rows.append((shape, model.step_time_s(shape)))
    return rows


@pytest.mark.parametrize(
    "truth,kind",
    [(AffineBatchTime(0.012, 1.15e-8), "affine"), (Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), "linear3")],
)
def test_fit_recovers_known_coefficients(truth, kind):
    report = fit_linear(_random_rows(truth, 40), kind=kind)
    assert report.num_rows == 40
    assert report.mape == pytest.approx(0.0, abs=1e-9)
    assert report.r2 == pytest.approx(1.0, abs=1e-9)
    for got, want in zip(report.model.linear_coefficients(), truth.linear_coefficients()):
        assert got == pytest.approx(want, rel=1e-6, abs=1e-15)


def test_fit_with_noise_reports_error_and_stays_non_negative():
    truth = Linear3BatchTime(0.0093, 0.0, 4.7e-5)  # no KV cost at all
    rng = random.Random(1)
    rows = [(s, t * (1 + rng.uniform(-0.05, 0.05))) for s, t in _random_rows(truth, 200, seed=2)]
    report = fit_linear(rows, kind="linear3")
    assert all(c >= 0 for c in report.model.linear_coefficients())
    assert 0.005 < report.mape < 0.05
    assert 0.5 < report.r2 < 1.0


def test_fit_bad_inputs():
    with pytest.raises(InputError, match="at least 3 rows"):
        fit_linear(_random_rows(AffineBatchTime(0.01, 1e-7), 2), kind="linear3")
    with pytest.raises(InputError, match="kind"):
        fit_linear(_random_rows(AffineBatchTime(0.01, 1e-7), 5), kind="cubic")
    rows = _random_rows(AffineBatchTime(0.01, 1e-7), 5)
    rows[3] = (rows[3][0], -1.0)
    with pytest.raises(InputError, match=r"rows\[3\]"):
        fit_linear(rows, kind="affine")


def test_operating_shapes_are_the_documented_grid():
    # every linearised model is fitted over these steps: b decodes of c cached tokens plus an
    # optional prefill chunk of k tokens, b ∈ {1, 4, 16, 64, 128, 256}, c ∈ {128, 512, 1024}, k ∈ {0, 128, 256, 512}
    want = {(b + k, b * (c + 1) + k, b, 1 if k else 0, k * k)
            for b in (1, 4, 16, 64, 128, 256) for c in (128, 512, 1024) for k in (0, 128, 256, 512)}
    got = [(s.new_tokens, s.kv_tokens, s.num_decodes, s.num_prefills, s.prefill_attention_pairs) for s in OPERATING_SHAPES]
    assert len(got) == 72 and set(got) == want


def test_a_fit_whose_constant_is_exactly_zero_is_refused():
    # y = 2·kv − 1 has a negative intercept: the non-negative fit pins d0 at exactly 0 (the
    # boundary of "not positive") and must refuse it rather than return a model without a step cost
    rows = [(BatchShape(new_tokens=n, kv_tokens=n, num_decodes=0, num_prefills=1), 2.0 * n - 1.0) for n in (1, 2, 3)]
    with pytest.raises(InputError, match="fitted constant d0 is not positive"):
        fit_linear(rows, kind="affine")


def test_profile_mlp_csv_must_be_a_non_empty_path():
    from fluid.batch_time_profile import profile_from_dict

    for bad in ("", 5):
        with pytest.raises(InputError, match="must be a file path or builtin:NAME") as info:
            profile_from_dict({"mlp_csv": bad, "num_layers": 2}, source="w.yaml", field="batch_time", base_dir=None)
        assert info.value.field == "batch_time.mlp_csv"


def test_fit_takes_exactly_the_minimum_rows_and_reports_r2_by_hand():
    # two rows determine an affine model, three a linear3 one: exactly the minimum is enough
    exact = [(BatchShape(1, 0, 1, 0), 0.01), (BatchShape(1, 1000, 1, 0), 0.02)]
    report = fit_linear(exact, kind="affine")
    assert report.num_rows == 2 and report.model.linear_coefficients()[:2] == pytest.approx((0.01, 1e-5))
    three = [(BatchShape(1, 0, 1, 0), 0.01), (BatchShape(1, 1000, 1, 0), 0.02), (BatchShape(2, 0, 2, 0), 0.015)]
    fitted = fit_linear(three, kind="linear3")
    assert fitted.num_rows == 3 and fitted.model.linear_coefficients() == pytest.approx((0.005, 1e-5, 0.005))
    with pytest.raises(InputError, match="at least 2 rows, got 1"):
        fit_linear(exact[:1], kind="affine")
    # kv 0, 1000, 2000 with times 0.01, 0.03, 0.02: the line through them is 0.015 + 5e-6·kv,
    # residuals -0.005, +0.01, -0.005, so ss_res = 1.5e-4, ss_tot = 2e-4 and r² = 1 − 0.75 = 0.25
    noisy = [(BatchShape(1, 0, 1, 0), 0.01), (BatchShape(1, 1000, 1, 0), 0.03), (BatchShape(1, 2000, 1, 0), 0.02)]
    report = fit_linear(noisy, kind="affine")
    assert report.model.linear_coefficients()[:2] == pytest.approx((0.015, 5e-6))
    assert report.r2 == pytest.approx(0.25)


def test_fit_of_equal_times_is_perfect_and_mape_is_by_hand():
    # every row 0.02 s: the fit is d0 = 0.02 (to rounding) and no per-token cost; ss_tot = 0, and a
    # fit reproducing the rows is a perfect one (R² = 1), not R² = 0 from a rounding residual
    flat = [(BatchShape(1, kv, 1, 0), 0.02) for kv in (0, 500, 1000)]
    for kind in ("affine", "linear3"):
        report = fit_linear(flat, kind=kind)
        assert report.r2 == 1.0 and report.mape == pytest.approx(0.0, abs=1e-12)
        assert [report.model.step_time_s(shape) for shape, _ in flat] == pytest.approx([0.02] * 3, rel=1e-12)
    # the noisy rows of the test above: |pred − y| / y = 0.005/0.01, 0.01/0.03, 0.005/0.02
    noisy = [(BatchShape(1, 0, 1, 0), 0.01), (BatchShape(1, 1000, 1, 0), 0.03), (BatchShape(1, 2000, 1, 0), 0.02)]
    assert fit_linear(noisy, kind="affine").mape == pytest.approx((0.5 + 1 / 3 + 0.25) / 3)


@pytest.mark.parametrize("seconds", [100.0, 1000.0, 12345.0])
def test_fit_of_equal_long_times_is_perfect_in_any_unit(seconds):
    # the "reproduces the rows" test of equal times is relative, |pred − y| ≤ 1e-12·y: rows of 100 s
    # or more (a profile in ms read as s) come back from the least squares a few ulps off (ulp(100)
    # = 1.4e-14, ulp(1000) = 1.1e-13), within 1e-12·y and R² = 1, as for rows of 0.02 s. An
    # absolute or inverse tolerance (1e-12/y = 1e-14 at 100 s) would call the same fit R² = 0
    flat = [(BatchShape(1, kv, 1, 0), seconds) for kv in (0, 500, 1000)]
    report = fit_linear(flat, kind="affine")
    assert report.r2 == 1.0
    assert [report.model.step_time_s(shape) for shape, _ in flat] == pytest.approx([seconds] * 3, rel=1e-12)


@pytest.mark.parametrize(("seconds", "rows"), [(0.1, 3), (0.2, 7), (0.013, 5)])
def test_fit_of_equal_times_whose_float_mean_is_off_is_perfect(seconds, rows):
    # equal times whose float mean is not the time itself (three of 0.1 s average
    # 0.10000000000000002): the squares about that mean (5.8e-34 there) are rounding, not spread,
    # and their ratio made R² −3, −5.9 and −6 (affine), 0, −15 and −24 (linear3) for a perfect fit
    import numpy as np

    assert np.full(rows, seconds).mean() != seconds
    flat = [(BatchShape(1, kv, 1, 0), seconds) for kv in range(0, 500 * rows, 500)]
    for kind in ("affine", "linear3"):
        report = fit_linear(flat, kind=kind)
        assert report.r2 == 1.0, kind
        assert [report.model.step_time_s(shape) for shape, _ in flat] == pytest.approx([seconds] * rows, rel=1e-12)


@pytest.mark.parametrize("unit", [1e-170, 1e-3, 1.0, 1e5])
def test_fit_r2_is_the_same_in_any_unit(unit):
    # the noisy rows above (R² = 0.25 by hand) in any unit of time: R² has none. In seconds × 1e-170
    # the squared deviations, ~1e-344, underflowed to ss_tot = 0, and R² came out 0
    noisy = [(BatchShape(1, 0, 1, 0), 0.01 * unit), (BatchShape(1, 1000, 1, 0), 0.03 * unit), (BatchShape(1, 2000, 1, 0), 0.02 * unit)]
    assert fit_linear(noisy, kind="affine").r2 == pytest.approx(0.25, rel=1e-12)


def test_mlp_csv_without_an_embedding_column_adds_no_embedding_time(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("num_tokens,time_stats.mlp.median,time_stats.attn_pre_proj.median\n1,0.5,0.25\n8,1.0,0.5\n")
    # 2 layers × (0.5 + 0.25) ms = 1.5 ms and 2 × 1.5 ms = 3 ms: nothing added for a missing embedding
    assert read_mlp_csv(path, num_layers=2) == ((1, 8), (pytest.approx(1.5e-3), pytest.approx(3e-3)))
    path.write_text("num_tokens,time_stats.mlp.median,time_stats.emb.median\n1,0.5,0.25\n8,1.0,0.5\n")
    assert read_mlp_csv(path, num_layers=2) == ((1, 8), (pytest.approx(1.25e-3), pytest.approx(2.5e-3)))  # emb once


def test_mlp_csv_needs_both_num_tokens_and_an_operator_median_column(tmp_path):
    # either one missing is not a Vidur mlp.csv (refused at its header line), not only both
    for name, text in (("no_ops.csv", "num_tokens,time_stats.emb\n1,0.5\n"),
                       ("no_tokens.csv", "tokens,time_stats.mlp.median\n1,0.5\n"),
                       ("neither.csv", "tokens,time\n1,0.5\n")):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(InputError, match=r"not a Vidur mlp.csv: needs num_tokens and time_stats.<op>.median columns") as info:
            read_mlp_csv(path, num_layers=1)
        assert info.value.source.endswith(f"{name}:1")


def test_profile_num_layers_takes_one_and_refuses_zero():
    one = batch_time_from_dict({"kind": "profile", "mlp_csv": MLP, "num_layers": 1}, source="w.yaml")
    assert one.non_attention_s == read_mlp_csv(MLP, num_layers=1)[1]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match=r"mlp_csv needs num_layers, which must be a positive integer number of model layers") as info:
            batch_time_from_dict({"kind": "profile", "mlp_csv": MLP, "num_layers": bad}, source="w.yaml")
        assert info.value.field == "batch_time.num_layers" and info.value.source == "w.yaml"


def test_mlp_csv_keeps_only_rows_of_its_tensor_parallel_degree_and_averages_repeats(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("num_tokens,num_tensor_parallel_workers,time_stats.mlp.median\n"
                    "1,1,0.5\n1,1,1.5\n8,1,2.0\n1,2,9.0\n8,2,7.0\n16,2,5.0\n")
    # degree 1: 1 token averages 0.5 and 1.5 ms to 1 ms; × 2 layers, in seconds
    assert read_mlp_csv(path, num_layers=2) == ((1, 8), (pytest.approx(2e-3), pytest.approx(4e-3)))
    assert read_mlp_csv(path, num_layers=1, tensor_parallel=2) == ((1, 8, 16), (pytest.approx(9e-3), pytest.approx(7e-3), pytest.approx(5e-3)))
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n8,2.0\n")  # no degree column: degree 1
    assert read_mlp_csv(path, num_layers=1) == ((1, 8), (pytest.approx(5e-4), pytest.approx(2e-3)))
    with pytest.raises(InputError, match="fewer than 2 token counts with tensor_parallel=4"):
        read_mlp_csv(path, num_layers=1, tensor_parallel=4)
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n1,0.7\n")  # one token count, twice
    with pytest.raises(InputError, match="fewer than 2 token counts with tensor_parallel=1"):
        read_mlp_csv(path, num_layers=1)


def test_a_profile_table_with_its_terms_by_hand_and_its_guards():
    from fluid.batch_time_profile import profile_from_dict

    table = {"num_tokens": [1, 8], "non_attention_s": [0.01, 0.02]}
    args = {"table": table, "overhead_s": 0.001, "attn_s_per_kv_token": 1e-7, "attn_s_per_prefill_pair": 2e-9}
    p = profile_from_dict(args, source="w.yaml", field="batch_time", base_dir=None)
    # 4 new tokens: 0.01 + (4 − 1)/(8 − 1)·0.01 s of table, plus 0.001 s, 1000 KV tokens · 1e-7 s, 16 pairs · 2e-9 s
    assert p.step_time_s(BatchShape(4, 1000, 0, 1, prefill_attention_pairs=16)) == pytest.approx(
        0.001 + 0.01 + 3 / 7 * 0.01 + 1e-4 + 16 * 2e-9, rel=1e-12)
    for bad, field, fragment in [({"table": table, "mlp_csv": MLP, "num_layers": 2}, "batch_time", "give exactly one of mlp_csv"),
                                 ({}, "batch_time", "give exactly one of mlp_csv"),
                                 ({"table": table, "num_layers": 2}, "batch_time.num_layers", "num_layers applies to mlp_csv only"),
                                 ({"table": {**table, "num_tokens": (1, 8)}}, "batch_time.table", "must be lists")]:
        with pytest.raises(InputError, match=fragment) as info:
            profile_from_dict(bad, source="w.yaml", field="batch_time", base_dir=None)
        assert info.value.field == field and info.value.source == "w.yaml"


@pytest.mark.parametrize("num_tokens, times, terms, field", [
    ((1,), (0.1,), {}, "batch_time.table"),  # one point is no table
    ((1, 2), (0.1,), {}, "batch_time.table"),
    ([1, 2], (0.1, 0.2), {}, "batch_time.table"),
    ((0, 2), (0.1, 0.2), {}, "batch_time.table.num_tokens"),
    ((1, 1), (0.1, 0.2), {}, "batch_time.table.num_tokens"),  # equal counts are not increasing
    ((2, 1), (0.1, 0.2), {}, "batch_time.table.num_tokens"),
    ((True, 2), (0.1, 0.2), {}, "batch_time.table.num_tokens"),
    ((1.0, 2), (0.1, 0.2), {}, "batch_time.table.num_tokens"),
    ((1, 2), (0.1, 0.0), {}, "batch_time.table.non_attention_s[1]"),  # a step takes time
    ((1, 2), (0.1, 0.2), {"overhead_s": -1.0}, "batch_time.overhead_s"),
    ((1, 2), (0.1, 0.2), {"attn_s_per_kv_token": float("nan")}, "batch_time.attn_s_per_kv_token"),
    ((1, 2), (0.1, 0.2), {"attn_s_per_prefill_pair": -1e-12}, "batch_time.attn_s_per_prefill_pair"),
])
def test_a_profile_table_is_refused_at_its_edges(num_tokens, times, terms, field):
    with pytest.raises(InputError) as info:
        ProfileBatchTime(num_tokens, times, **terms)
    assert info.value.field == field


def test_the_smallest_profile_table_has_two_points_and_zero_terms():
    p = ProfileBatchTime((1, 2), (0.1, 0.2), overhead_s=0.0, attn_s_per_kv_token=0.0, attn_s_per_prefill_pair=0.0)
    assert p.step_time_s(BatchShape(2, 10_000, 2, 0)) == 0.2


def test_mlp_csv_rows_with_a_count_below_one_or_a_negative_median_name_their_line(tmp_path):
    path = tmp_path / "mlp.csv"
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n0,0.7\n")
    with pytest.raises(InputError, match=r"num_tokens must be a positive integer, got 0; fix or delete the row") as info:
        read_mlp_csv(path, num_layers=1)
    assert info.value.source == f"{path}:3"
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n8,-0.1\n")
    with pytest.raises(InputError, match=r"time_stats.mlp.median must be a finite non-negative number \(ms\), got -0.1 \(num_tokens 8\)") as info:
        read_mlp_csv(path, num_layers=1)
    assert info.value.source == f"{path}:3"
    path.write_text("num_tokens,time_stats.mlp.median\n1,0.5\n8,0\n")  # a zero median is a measurement
    assert read_mlp_csv(path, num_layers=1) == ((1, 8), (pytest.approx(5e-4), 0.0))
