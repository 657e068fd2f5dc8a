"""Input guards at their edges: zero, negative, non-finite, booleans and wrong types are refused
with an InputError naming the field, and the value just inside the edge is accepted."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from fluid.batch_time import AffineBatchTime
from fluid.errors import InputError
from fluid.fleet import LPOptions
from fluid.model_specs import MODEL_SPECS, model_spec
from fluid.traces import load_timestamp_trace
from fluid.workload import RequestType, Workload
from thresholds.policy import ClassThreshold, Segment

BAD_NUMBERS = [0, 0.0, -1, -0.5, math.inf, math.nan, True, "1"]


@pytest.mark.parametrize("field", ["batch_cap", "token_budget_tokens", "tbt_slo_s"])
@pytest.mark.parametrize("value", BAD_NUMBERS)
def test_lp_options_refuse_non_positive_limits(field, value):
    with pytest.raises(InputError, match="finite positive") as info:
        LPOptions(**{field: value})
    assert info.value.field == field


def test_lp_options_accept_small_positive_limits_and_none():
    opts = LPOptions(batch_cap=1e-9, token_budget_tokens=1, tbt_slo_s=0.001)
    assert opts.batch_cap == 1e-9 and LPOptions().batch_cap is None


@pytest.mark.parametrize("value", [0, 0.0, -1, math.inf, math.nan, True, "2", None])
def test_policy_thresholds_must_be_finite_and_positive(value):
    # reals > 0 here (the capped rule takes real thresholds); the readers require integers where needed
    with pytest.raises(InputError, match="finite positive number"):
        ClassThreshold("a", 10, 5, 1.0, value)
    with pytest.raises(InputError, match="finite positive number"):
        Segment(0, 5, value, 0.5, None)
    assert ClassThreshold("a", 10, 5, 1.0, 1).threshold == 1
    assert Segment(0, 5, 1e-3, 0.5, None).threshold == 1e-3


@pytest.mark.parametrize("scale", [0.0, -2.0, math.inf, math.nan])
def test_workload_rate_scale_must_be_finite_and_positive(scale):
    w = Workload("w", 1000, AffineBatchTime(0.01, 1e-5), (RequestType("a", 10, 5, 2.0),))
    with pytest.raises(InputError, match="rate scale"):
        w.scaled(scale)
    assert w.scaled(1e-6).types[0].rate_per_s == pytest.approx(2e-6)


def test_timestamps_must_not_go_back_from_the_previous_row(tmp_path):
    # 18:00:05 after 18:00:00 but before 18:00:09 (the row before): out of order even though it
    # is later than the first row
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\n"
                    "2023-11-16 18:00:09,3,4\n2023-11-16 18:00:05,5,6\n")
    with pytest.raises(InputError, match="earlier than the row before") as info:
        load_timestamp_trace(path)
    assert f"{path}:4" in str(info.value)


def test_trace_arrays_are_read_only(tmp_path):
    # the parsed arrays are shared through a cache: a caller must not be able to change them
    path = tmp_path / "t.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:00:00,1,2\n2023-11-16 18:00:02,3,4\n")
    trace = load_timestamp_trace(path)
    assert list(trace.arrival_s) == [0.0, 2.0]
    for arr in (trace.arrival_s, trace.prompt_tokens, trace.output_tokens):
        with pytest.raises(ValueError, match="read-only"):
            arr[0] = 7
    again = load_timestamp_trace(path)
    assert np.array_equal(again.arrival_s, [0.0, 2.0])


# KV bytes per token = 2 · layers · kv_heads · head_dim · 2 bytes (bf16), from the models' published
# configs: Llama-2-7B 32 layers, 32 KV heads of 128; Llama-2-13B 40 layers, 40 of 128; Llama-3-8B
# 32 layers, 8 of 128.
@pytest.mark.parametrize(
    ("name", "shape", "kv_bytes"),
    [
        ("llama-2-7b", (32, 4096, 11008, 32, 32, 32000), 2 * 32 * 32 * 128 * 2),
        ("llama-2-13b", (40, 5120, 13824, 40, 40, 32000), 2 * 40 * 40 * 128 * 2),
        ("llama-3-8b", (32, 4096, 14336, 32, 8, 128256), 2 * 32 * 8 * 128 * 2),
    ],
)
def test_model_shapes_match_the_published_configs(name, shape, kv_bytes):
    m = model_spec(name)
    assert (m.num_layers, m.hidden_size, m.intermediate_size, m.num_attention_heads, m.num_kv_heads,
            m.vocab_size) == shape
    assert m.head_dim == 128 and m.kv_bytes_per_token == kv_bytes


@pytest.mark.parametrize(("name", "rope_theta"), [("llama-2-7b", 10000.0), ("llama-2-13b", 10000.0), ("llama-3-8b", 500000.0)])
def test_rope_base_and_norm_epsilon_match_the_published_configs(name, rope_theta):
    # the GPU runtime builds its LlamaConfig from these: a wrong RoPE base or RMSNorm ε loads the
    # real weights into a model that computes something else (config.json: rope_theta, rms_norm_eps)
    m = model_spec(name)
    assert (m.rope_theta, m.rms_norm_eps) == (rope_theta, 1e-5)


def test_tiny_llama_shape_and_parameters_by_hand():
    spec = model_spec("tiny-llama")
    assert (spec.num_layers, spec.hidden_size, spec.intermediate_size, spec.num_attention_heads, spec.num_kv_heads,
            spec.vocab_size, spec.max_position_embeddings) == (2, 64, 128, 4, 2, 256, 2048)
    # per layer q, o (64·64 each), k, v (64·32 each), gate, up, down (64·128 each), two norms (64)
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    assert spec.param_count == 2 * per_layer + 2 * 256 * 64 + 64 == 106_816  # + embeddings, lm head, final norm
    assert spec.weight_bytes == 2 * 106_816


def test_llama_3_context_and_rope_and_unknown_model():
    m = MODEL_SPECS["llama-3-8b"]
    assert (m.max_position_embeddings, m.rope_theta) == (8192, 500000.0)
    assert MODEL_SPECS["llama-2-7b"].max_position_embeddings == 4096
    with pytest.raises(InputError, match="unknown model 'llama-9'"):
        model_spec("llama-9")


# --- batch-time models ------------------------------------------------------------------------
@pytest.mark.parametrize("value", ["0.01", None, True, [0.01]])
def test_batch_time_coefficients_must_be_numbers(value):
    from fluid.batch_time import Linear3BatchTime

    with pytest.raises(InputError, match=rf"field 'batch_time.d0_s': must be a finite positive number of seconds, got {re.escape(repr(value))}$"):
        Linear3BatchTime(value, 1e-7, 1e-5)


def test_staircase_needs_a_positive_constant_but_allows_a_zero_slope():
    from fluid.batch_time import StaircaseBatchTime

    with pytest.raises(InputError, match="finite positive") as info:
        StaircaseBatchTime(0.0, 0.03)
    assert info.value.field == "batch_time.c_s"
    assert StaircaseBatchTime(0.01, 0.0).a_s == 0.0


def test_default_attention_costs_follow_from_the_a100_datasheet():
    # Llama-2-7B reads 524,288 KV bytes per cached token (2·32 layers·32 heads·128·2 B) at the
    # A100-80GB's 2.039 TB/s; a prefill token pair costs 4·32 layers·4096 FLOPs at half of 312 TFLOP/s
    from fluid import batch_time_profile as bp

    assert model_spec("llama-2-7b").kv_bytes_per_token == 524_288
    assert bp.DEFAULT_ATTN_S_PER_KV_TOKEN == pytest.approx(524_288 / 2.039e12, rel=1e-15)
    assert bp.DEFAULT_ATTN_S_PER_PREFILL_PAIR == pytest.approx(4 * 32 * 4096 / 156e12, rel=1e-15)


# --- metrics on a hand-made step log ----------------------------------------------------------------
def test_step_metrics_by_hand():
    from fluid.batch_time import BatchShape
    from runtime.metrics import step_metrics
    from runtime.sim import StepLog

    log = StepLog()
    # (start, end, new tokens, kv tokens, decodes, prefills, kv used after, evicted)
    rows = [(0.0, 1.0, 10, 10, 0, 1, 16, 0), (1.0, 1.5, 2, 24, 1, 1, 32, 0), (1.5, 3.5, 1, 12, 1, 0, 16, 2)]
    for start, end, new, kv, dec, pre, used, ev in rows:
        log.append(start, end, BatchShape(new, kv, dec, pre), used, ev)
    m = step_metrics(log, 64)
    assert m["num_steps"] == 3 and m["busy_s"] == 3.5 and m["mean_step_s"] == pytest.approx(3.5 / 3)
    assert m["max_batch_size"] == 2 and m["mean_batch_size"] == pytest.approx(4 / 3)
    # one decode and one prefill in step 2 is a mixed step; step 1 is prefill-only, step 3 decode-only
    assert m["mixed_step_fraction"] == pytest.approx(1 / 3)
    assert m["prefill_only_step_fraction"] == pytest.approx(1 / 3)
    assert m["decode_only_step_fraction"] == pytest.approx(1 / 3)
    # new tokens 13, of which 2 are decodes: 11/13 prefill
    assert m["prefill_token_fraction"] == pytest.approx(11 / 13)
    # KV held weighted by duration: (16·1 + 32·0.5 + 16·2) / 3.5
    assert m["peak_kv_tokens"] == 32 and m["mean_kv_tokens"] == pytest.approx(64 / 3.5)
    assert m["evictions"] == 2 and m["kv_capacity_tokens"] == 64
    assert step_metrics(StepLog(), 64)["num_steps"] == 0


def test_which_policies_read_output_lengths():
    from runtime.schedulers import SCHEDULERS, scheduler_class

    knows = {name for name in SCHEDULERS if scheduler_class(name).uses_output_lengths}
    assert knows == {"wait", "wait-capped", "wait-adaptive", "orca", "mc-sf"}


@pytest.mark.parametrize("name", ["", None, 3])
def test_request_type_needs_a_non_empty_string_name(name):
    with pytest.raises(InputError, match="a type needs a non-empty name") as info:
        RequestType(name, 10, 5, 1.0)
    assert info.value.field == "types[].name"


def test_request_type_tbt_slo_must_be_positive_or_absent():
    # a type built in code (trace binning, experiments) meets the same check as one read from a file
    with pytest.raises(InputError, match="got 0.0") as info:
        RequestType("a", 10, 5, 1.0, tbt_slo_s=0.0)
    assert info.value.field == "types[a].tbt_slo_s"
    assert RequestType("a", 10, 5, 1.0, tbt_slo_s=1e-9).tbt_slo_s == 1e-9
    assert RequestType("a", 10, 5, 1.0).tbt_slo_s is None


@pytest.mark.parametrize("value", [True, 12.5, "12"])
def test_request_type_lengths_must_be_integers(value):
    with pytest.raises(InputError, match="integer number of tokens") as info:
        RequestType("a", value, 5, 1.0)
    assert info.value.field.endswith("prefill")


@pytest.mark.parametrize("value", [-1e-9, math.inf, -math.inf, math.nan])
def test_batch_time_coefficients_must_be_finite_and_non_negative(value):
    from fluid.batch_time import Linear3BatchTime

    with pytest.raises(InputError, match="finite non-negative"):
        Linear3BatchTime(0.01, value, 1e-5)
    assert Linear3BatchTime(0.01, 0.0, 0.0).d_kv_s_per_token == 0.0


def test_closed_form_report_by_hand():
    # a = (1+1)(4 + 1/2) = 9, L = 0.01·2·9 = 0.18, ΔT* = 0.1/0.82, M* = ΔT*·2·9, use = M*/C
    from fluid.cli import closed_form_report
    from fluid.equilibrium import closed_form_full

    w = Workload("w", 1000, AffineBatchTime(0.1, 0.01), (RequestType("a", 4, 1, 2.0),))
    rep = closed_form_report(w, closed_form_full(w))
    dt = 0.1 / (1 - 0.18)
    assert rep["load_factor"] == pytest.approx(0.18) and rep["iteration_time_star_s"] == pytest.approx(dt)
    assert rep["memory_star_tokens"] == pytest.approx(18 * dt)
    assert rep["memory_use"] == pytest.approx(18 * dt / 1000)
    assert rep["types"][0]["prompts_per_stage"] == pytest.approx(2 * dt)
    assert rep["stable"] is True


@pytest.mark.parametrize(("cv", "ok"), [(1e-3, True), (100.0, True), (9.99e-4, False), (100.01, False)])
def test_gamma_cv_range_is_inclusive(cv, ok):
    from fluid.workload import ArrivalSpec

    if ok:
        assert ArrivalSpec("gamma", cv).cv == cv
    else:
        with pytest.raises(InputError, match=r"gamma cv must be a number in \[0.001, 100\], got .*: the gap shape"):
            ArrivalSpec("gamma", cv)


def test_staircase_steps_at_exactly_one_tile():
    # t = c + a·⌈new tokens / 128⌉ (arXiv 2504.07347's b0 = 128 by default)
    from fluid.batch_time import BatchShape, StaircaseBatchTime

    m = StaircaseBatchTime(0.01, 0.03)
    assert m.tile_tokens == 128
    assert m.step_time_s(BatchShape(128, 0, 0, 1)) == pytest.approx(0.04)
    assert m.step_time_s(BatchShape(129, 0, 0, 1)) == pytest.approx(0.07)
    assert m.step_time_s(BatchShape(1, 500, 1, 0)) == pytest.approx(0.04)  # KV read does not enter


def test_tiny_llama_kv_bytes_by_hand():
    # 2 (K and V) · 2 layers · 2 KV heads · head_dim 64/4 = 16 · 2 bytes (bf16) = 256 bytes per token
    spec = model_spec("tiny-llama")
    assert (spec.num_layers, spec.num_kv_heads, spec.head_dim) == (2, 2, 16)
    assert spec.kv_bytes_per_token == 256


def test_json_errors_raised_while_parsing_name_the_file():
    from fluid.file_input import parse_json

    # NaN is refused by a hook that does not know the file: parse_json adds it
    with pytest.raises(InputError) as info:
        parse_json('{"a": NaN}', what="policy file", source="p.json")
    assert info.value.source == "p.json" and str(info.value).startswith("p.json: NaN is not a number JSON allows")
    # a duplicate key is refused by a hook that already names the file and the key: kept as it is
    with pytest.raises(InputError) as info:
        parse_json('{"a": 1, "a": 2}', what="policy file", source="p.json")
    assert info.value.source == "p.json" and info.value.field == "a"
    assert str(info.value).startswith("p.json, field 'a': key 'a' appears twice")


def test_nesting_limit_counts_whole_levels_of_brackets_and_indentation():
    from fluid.file_input import MAX_NESTING, check_nesting

    def refused(text):
        try:
            check_nesting(text, what="workload file", source="w.yaml")
        except InputError as err:
            return str(err)
        return None

    assert refused("[" * MAX_NESTING + "]" * MAX_NESTING) is None  # exactly the limit
    assert f"(found {MAX_NESTING + 1})" in refused("[" * (MAX_NESTING + 1) + "]" * (MAX_NESTING + 1))
    # two spaces (or "- ") per level; an odd space left over is not a level
    assert refused(" " * (2 * MAX_NESTING + 1) + "v: 1\n") is None
    assert f"nests more than {MAX_NESTING} levels deep (found {MAX_NESTING + 1});" in refused(" " * (2 * MAX_NESTING + 3) + "v: 1\n")


def test_adaptive_schedulers_do_not_offer_the_capped_base_options_they_do_not_take():
    # WaitAdaptive derives from the capped scheduler but its __init__ takes no **kwargs: look_ahead and
    # pace never reach the base, so they must be refused by name, not accepted and then crash
    from runtime.kv_blocks import KVBlockManager
    from runtime.schedulers import make_scheduler, scheduler_options

    assert scheduler_options("wait-adaptive") == ("policy", "resident_cap", "prefill_chunk_tokens", "window_s",
                                                  "period_s", "hysteresis", "work_conserving")
    assert "look_ahead" in scheduler_options("wait-capped")
    for name in ("wait-adaptive", "nested-wait-adaptive"):
        with pytest.raises(InputError, match=rf"scheduler '{name}' has no option\(s\) \['look_ahead'\]; its options: policy,") as info:
            make_scheduler(name, KVBlockManager(1024, 16), look_ahead=4)
        assert info.value.field == "option"


@pytest.mark.parametrize("cv", [0, 0.0, -1.0, None])
def test_gamma_cv_of_zero_or_less_is_refused_as_not_positive(cv):
    # zero is no gamma cv at all (the shape 1/cv² is infinite): the first guard calls it not
    # positive, before the range check of the tiny-but-positive ones
    from fluid.workload import ArrivalSpec

    with pytest.raises(InputError) as info:
        ArrivalSpec("gamma", cv)
    assert info.value.field == "arrivals.cv"
    assert f"gamma arrivals' cv (1 = Poisson) must be a finite positive number, got {cv!r}" in str(info.value)


def test_workload_type_names_must_be_unique_and_each_repeat_is_named_once():
    bt = AffineBatchTime(0.01, 1e-5)
    a, b = RequestType("a", 10, 5, 1.0), RequestType("b", 10, 5, 1.0)
    assert [t.name for t in Workload("w", 1000, bt, (a, b)).types] == ["a", "b"]
    with pytest.raises(InputError, match=re.escape("type names must be unique, repeated: ['a', 'b']")) as info:
        Workload("w", 1000, bt, (a, b, a, b, a))
    assert info.value.field == "types"
    with pytest.raises(InputError, match="a workload needs at least one request type"):
        Workload("w", 1000, bt, ())
    with pytest.raises(InputError, match="must be an ArrivalSpec"):
        Workload("w", 1000, bt, (a,), arrivals={"kind": "poisson"})


def test_nesting_depth_goes_down_one_level_per_closing_bracket():
    # "[[" then "]" leaves one level open: the next MAX_NESTING brackets reach MAX_NESTING + 1
    from fluid.file_input import MAX_NESTING, check_nesting

    text = "[[" + "]" + "[" * MAX_NESTING + "]" * (MAX_NESTING + 1)
    with pytest.raises(InputError) as info:
        check_nesting(text, what="workload file", source="w.yaml")
    assert f"(found {MAX_NESTING + 1})" in str(info.value)
    # one level fewer fits exactly: closing brackets never drive the depth below zero
    check_nesting("]]" + "[" * MAX_NESTING + "]" * MAX_NESTING, what="workload file", source="w.yaml")


def test_an_error_re_raised_elsewhere_keeps_its_whole_message():
    # `detail` is the message without the "source, field '...'" prefix, even when the message itself
    # holds ": " (a reader re-raising it under its own field must not cut it there)
    from fluid.errors import InputError, with_source

    err = InputError("needs a rate: got -1", field="types[0].rate_per_s")
    assert err.detail == "needs a rate: got -1" and str(err) == "field 'types[0].rate_per_s': needs a rate: got -1"
    moved = with_source(err, "w.yaml")
    assert str(moved) == "w.yaml, field 'types[0].rate_per_s': needs a rate: got -1" and moved.detail == err.detail
    bare = InputError("unknown model 'x': known models: a, b")
    assert with_source(bare, "w.yaml").detail == "unknown model 'x': known models: a, b"


def test_a_byte_that_is_not_utf8_is_named_with_its_offset_and_line_by_hand():
    from fluid.file_input import decode_utf8

    # lines count from 1: a bad first byte is on line 1; after two newlines (offsets 2 and 5) the
    # byte at offset 6 is on line 3, and \r\n ends a line once
    for data, offset, line in ((b"\xe9abc", 0, 1), (b"ok\nok\n\xe9", 6, 3), (b"a\r\nb\n\xff", 5, 3)):
        with pytest.raises(InputError) as info:
            decode_utf8(data, what="trace file", source="t.csv")
        assert info.value.source == f"t.csv:{line}"
        assert f"(byte 0x{data[offset]:02x} at offset {offset}, line {line})" in str(info.value)
    assert decode_utf8("\ufeffhi\n".encode(), what="trace file", source="t.csv") == "hi\n"  # the BOM is dropped
