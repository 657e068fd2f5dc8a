"""Input guards at their edges: zero, negative, non-finite, booleans and wrong types are refused
with an InputError naming the field, and the value just inside the edge is accepted."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "2", None])
def test_policy_thresholds_must_be_integers_of_at_least_one(value):
    with pytest.raises(InputError, match="integer ≥ 1"):
        ClassThreshold("a", 10, 5, 1.0, value)
    with pytest.raises(InputError, match="integer ≥ 1"):
        Segment(0, 5, value, 0.5, None)
    assert ClassThreshold("a", 10, 5, 1.0, 1).threshold == 1


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


def test_llama_3_context_and_rope_and_unknown_model():
    m = MODEL_SPECS["llama-3-8b"]
    assert (m.max_position_embeddings, m.rope_theta) == (8192, 500000.0)
    assert MODEL_SPECS["llama-2-7b"].max_position_embeddings == 4096
    with pytest.raises(InputError, match="unknown model 'llama-9'"):
        model_spec("llama-9")
