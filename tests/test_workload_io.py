"""Workload files: presets, round trips, memory-derived capacity, and every bad input."""

from __future__ import annotations

import copy
import json
import math

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from fluid.equilibrium import closed_form
from fluid.errors import InputError
from fluid.memory import kv_capacity_tokens_from_memory
from fluid.model_specs import model_spec
from fluid.presets import preset_names
from fluid.workload import ArrivalSpec
from fluid.workload_io import load_workload, workload_content_sha256, workload_from_dict, workload_to_dict

PAPER_PRESETS = {
    "paper-a-two-types",
    "paper-b-three-types",
    "p512d20",
    "p512d1000",
    "mix-p512d20-p512d50",
    "nested-c-four-classes",
    "chat-d-ten-bins",
    "chat-d-ten-bins-550",
    "sharegpt-slai",
    "azure-conv",
    "default",
}

GOOD = {
    "name": "t",
    "kv_capacity_tokens": 137000,
    "batch_time": {"kind": "linear3", "d0_s": 0.0093, "d_kv_s_per_token": 2.6e-7, "d_new_s_per_token": 4.7e-5},
    "types": [
        {"name": "short", "prefill": 512, "decode": 20, "rate_per_s": 20.0},
        {"name": "long", "prefill": 512, "decode": 50, "rate_per_s": 5.0, "tbt_slo_s": 0.2},
    ],
}


def test_every_named_preset_exists():
    assert PAPER_PRESETS <= set(preset_names())


@pytest.mark.parametrize("name", sorted(PAPER_PRESETS))
def test_preset_loads_round_trips_and_is_stable(name):
    w = load_workload(name)
    assert w.name == name
    again = workload_from_dict(json.loads(json.dumps(workload_to_dict(w))), source="round trip")
    assert again == w
    assert workload_content_sha256(again) == workload_content_sha256(w)
    point = closed_form(w)
    assert point.stable, f"{name}: L={point.load_factor}, M*/C={point.memory_use}"
    # presets sit inside the stability region but near it (chosen at about 80-95 % of capacity)
    assert 1.0 < point.capacity_scale < 1.25


def test_default_preset_is_memory_bound_with_several_prompts_per_stage():
    # the main job needs memory to bind (M* near C) and n_j* of several prompts per stage, so that
    # integer WAIT thresholds can track the fluid point
    w = load_workload("default")
    point = closed_form(w)
    assert len(w.types) == 2
    assert 0.7 <= point.memory_use <= 0.9
    assert min(point.prompts_per_stage) >= 3


def test_chat_d_550_is_the_55_preset_scaled_in_time():
    slow, fast = closed_form(load_workload("chat-d-ten-bins")), closed_form(load_workload("chat-d-ten-bins-550"))
    assert fast.memory_star_tokens == pytest.approx(slow.memory_star_tokens)
    assert fast.iteration_time_star_s == pytest.approx(slow.iteration_time_star_s / 10)


def test_yaml_and_json_files_and_rate_scale(tmp_path):
    y, j = tmp_path / "w.yaml", tmp_path / "w.json"
    y.write_text(yaml.safe_dump(GOOD))
    j.write_text(json.dumps(GOOD))
    wy, wj = load_workload(y), load_workload(str(j))
    assert wy == wj
    assert wy.types[1].tbt_slo_s == 0.2
    assert wy.arrivals == ArrivalSpec()
    scaled = load_workload(y, rate_scale=2.0)
    assert [t.rate_per_s for t in scaled.types] == [40.0, 10.0]


@pytest.mark.parametrize("scale", [0, 0.0, -2.0])
def test_a_rate_scale_of_zero_or_less_is_refused_as_itself_not_as_a_rate_out_of_range(tmp_path, scale):
    y = tmp_path / "w.yaml"
    y.write_text(yaml.safe_dump(GOOD))
    with pytest.raises(InputError) as info:
        load_workload(y, rate_scale=scale)
    assert info.value.field == "rate_scale" and info.value.source == str(y)
    assert str(info.value).endswith(f"rate scale must be a finite positive number factor, got {scale!r}")
    # a finite, positive scale can still overflow a rate: that one is reported as such
    with pytest.raises(InputError, match=r"rate scale 1e\+308 puts a rate out of range") as info:
        load_workload(y, rate_scale=1e308)
    assert info.value.field == "rate_scale"


def test_yaml_exponent_without_dot_is_a_float(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: e\nkv_capacity_tokens: 1000\nbatch_time: {kind: affine, d0_s: 1e-2, d1_s_per_token: 3e-7}\n"
        "types: [{name: a, prefill: 1, decode: 2, rate_per_s: 1e1}]\n"
    )
    w = load_workload(path)
    assert w.batch_time.d1_s_per_token == 3e-7 and w.types[0].rate_per_s == 10.0


def test_memory_capacity_matches_hand_computation():
    spec = model_spec("llama-2-7b")
    h, f, v, layers = 4096, 11008, 32000, 32
    params = layers * (4 * h * h + 3 * h * f + 2 * h) + 2 * v * h + h  # 32 KV heads = 32 query heads
    assert spec.weight_bytes == 2 * params
    kv_per_token = 2 * layers * 32 * 128 * 2  # 512 KiB
    by_hand = (int(80 * 2**30 * 0.9) - 2 * params - 2**30) // kv_per_token
    assert kv_capacity_tokens_from_memory(80, 0.9, "llama-2-7b", reserved_gib=1.0) == by_hand
    # fp8 KV cache doubles the tokens for the same bytes
    fp8 = kv_capacity_tokens_from_memory(80, 0.9, "llama-2-7b", dtype_bytes=1, reserved_gib=1.0)
    assert fp8 == (int(80 * 2**30 * 0.9) - 2 * params - 2**30) // (kv_per_token // 2)


def test_memory_capacity_in_a_workload_and_inline_model():
    doc = copy.deepcopy(GOOD)
    del doc["kv_capacity_tokens"]
    doc["kv_capacity"] = {"gpu_memory_gib": 80, "memory_fraction": 0.25, "model": "llama-2-7b"}
    w = workload_from_dict(doc, source="mem")
    assert w.kv_capacity_tokens == kv_capacity_tokens_from_memory(80, 0.25, "llama-2-7b")
    inline = model_spec("llama-2-7b").to_dict()
    del inline["name"]
    doc["kv_capacity"]["model"] = inline
    assert workload_from_dict(doc, source="mem").kv_capacity_tokens == w.kv_capacity_tokens


def test_weights_too_big_says_how_much_they_need():
    with pytest.raises(InputError, match=r"weights of llama-2-13b need 24\.\d\d GiB"):
        kv_capacity_tokens_from_memory(24, 0.9, "llama-2-13b")


def test_arrivals_parse_and_trace_paths_resolve(tmp_path):
    doc = copy.deepcopy(GOOD)
    doc["arrivals"] = {"kind": "gamma", "cv": 2.0}
    assert workload_from_dict(doc, source="a").arrivals == ArrivalSpec("gamma", 2.0)
    trace = tmp_path / "sub" / "t.csv"
    trace.parent.mkdir()
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n1.5,20,7\n")
    doc["arrivals"] = {"kind": "trace", "trace": "sub/t.csv", "time_scale": 0.5}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc))
    w = load_workload(path)
    assert w.arrivals.trace == str(trace.resolve()) and w.arrivals.time_scale == 0.5
    assert workload_from_dict(workload_to_dict(w), source="rt") == w
    assert load_workload(path, rate_scale=2.0).arrivals.time_scale == 0.25
    # the content hash follows the trace's bytes, not its path
    before = workload_content_sha256(w)
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n2.5,20,7\n")
    assert workload_content_sha256(w) != before


def _with(path: str, value):
    """GOOD with the value at dotted `path` replaced (value `...` deletes it)."""
    doc = copy.deepcopy(GOOD)
    *parents, last = path.split(".")
    node = doc
    for p in parents:
        node = node[int(p)] if p.isdigit() else node[p]
    if value is ...:
        del node[int(last) if last.isdigit() else last]
    else:
        node[int(last) if last.isdigit() else last] = value
    return doc


BAD_DOCUMENTS = [
    # (document, field path in the message, another fragment that must appear)
    (_with("nmae", "x"), "nmae", "did you mean 'name'"),
    (_with("block_size_tokens", 16), "block_size_tokens", "not part of a workload"),
    (_with("types.0.rate_per_sec", 1.0), "types[0].rate_per_sec", "did you mean 'rate_per_s'"),
    (_with("batch_time.d1_s_per_tok", 1e-7), "batch_time.d1_s_per_tok", "valid keys"),
    (_with("name", ...), "(top level)", "'name'"),
    (_with("types.0.decode", ...), "types[0]", "'decode'"),
    (_with("types.0.rate_per_s", 0.0), "types[0].rate_per_s", "0.0"),
    (_with("types.0.rate_per_s", -3), "types[0].rate_per_s", "-3"),
    (_with("types.0.rate_per_s", math.inf), "types[0].rate_per_s", "Infinity"),
    (_with("types.0.rate_per_s", math.nan), "types[0].rate_per_s", "NaN"),
    (_with("types.1.prefill", 512.0), "types[1].prefill", "512.0"),
    (_with("types.1.prefill", 12.5), "types[1].prefill", "12.5"),
    (_with("types.1.prefill", 2**53 + 1), "types[1].prefill", "must be an integer ≤ 9007199254740992 tokens (2^53)"),
    (_with("types.0.decode", 10**400), "types[0].decode", "must be an integer ≤"),  # too big for a float, still an InputError
    (_with("types.0.decode", 0), "types[0].decode", "0"),
    (_with("types.0.decode", True), "types[0].decode", "True"),
    (_with("types.0.tbt_slo_s", -0.1), "types[0].tbt_slo_s", "-0.1"),
    (_with("types.0.tbt_slo_s", 0.0), "types[0].tbt_slo_s", "0.0"),  # an SLO of 0 s: no token meets it
    (_with("types.0.name", ""), "types[0].name", "non-empty string"),
    (_with("types", []), "types", "non-empty"),
    (_with("types.1.name", "short"), "types", "unique"),
    (_with("kv_capacity_tokens", 0), "kv_capacity_tokens", "0"),
    (_with("kv_capacity_tokens", 1.5e5), "kv_capacity_tokens", "150000.0"),
    (_with("kv_capacity_tokens", ...), "kv_capacity_tokens", "exactly one"),
    (_with("kv_capacity", {"gpu_memory_gib": 80, "memory_fraction": 0.9, "model": "llama-9"}), "kv_capacity_tokens", "both"),
    (_with("batch_time.kind", "afine"), "batch_time.kind", "did you mean 'affine'"),
    (_with("batch_time.d0_s", -1.0), "batch_time.d0_s", "-1.0"),
    (_with("batch_time", {"kind": "staircase", "c_s": 0.01}), "batch_time", "'a_s'"),
    (_with("types_from_trace", {"path": "builtin:sharegpt_8k_filtered_stats_llama2_tokenizer.csv", "bins": 3}), "types", "both"),
    (_with("arrivals", {"kind": "poison"}), "arrivals.kind", "did you mean 'poisson'"),
    (_with("arrivals", {"kind": "gamma"}), "arrivals.cv", "None"),
    (_with("arrivals", {"kind": "poisson", "cv": 2.0}), "arrivals.cv", "gamma"),
    (_with("arrivals", {"kind": "trace", "trace": "builtin:nope.csv"}), "arrivals.trace", "nope.csv"),
    (_with("arrivals", {"kind": "trace", "trace": "missing.csv"}), "arrivals.trace", "missing.csv"),
]
MEMORY_BAD = [
    ({"gpu_memory_gib": 80, "memory_fraction": 1.5, "model": "llama-2-7b"}, "kv_capacity.memory_fraction", "1.5"),
    ({"gpu_memory_gib": -1, "memory_fraction": 0.9, "model": "llama-2-7b"}, "kv_capacity.gpu_memory_gib", "-1"),
    ({"gpu_memory_gib": 80, "memory_fraction": 0.9, "model": "llama-9"}, "kv_capacity.model", "llama-9"),
    ({"gpu_memory_gib": 80, "memory_fraction": 0.9, "model": {"num_layers": 2}}, "kv_capacity.model", "hidden_size"),
    ({"gpu_memory_gib": 80, "memory_fraction": 0.9, "model": "llama-2-7b", "dtype_bytes": 3}, "kv_capacity.dtype_bytes", "3"),
    ({"gpu_memory_gib": 8, "memory_fraction": 0.9, "model": "llama-2-7b"}, "kv_capacity", "weights of llama-2-7b need"),
    ({"gpu_memory_gib": 80, "memory_fraction": 0.9, "modle": "llama-2-7b"}, "kv_capacity.modle", "did you mean 'model'"),
]
for _spec, _field, _frag in MEMORY_BAD:
    _doc = _with("kv_capacity_tokens", ...)
    _doc["kv_capacity"] = _spec
    BAD_DOCUMENTS.append((_doc, _field, _frag))


@pytest.mark.parametrize("doc,field,fragment", BAD_DOCUMENTS, ids=[f"{i}:{b[1]}" for i, b in enumerate(BAD_DOCUMENTS)])
def test_bad_documents_raise_input_error_with_field_and_file(tmp_path, doc, field, fragment):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError) as info:
        load_workload(path)
    message = str(info.value)
    assert str(path) in message
    assert field in message
    assert fragment in message


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(InputError, match="valid presets: .*p512d20") as info:
        load_workload("p512d2O")
    assert "did you mean 'p512d20'" in str(info.value)


def test_missing_file_and_broken_yaml(tmp_path):
    with pytest.raises(InputError, match="no such workload file"):
        load_workload(tmp_path / "nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\ntypes: [\n  {name: a\n")
    with pytest.raises(InputError, match=rf"{broken}:\d+: .*not valid YAML"):
        load_workload(broken)
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    with pytest.raises(InputError, match="empty"):
        load_workload(empty)


_names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=12)
_rates = st.floats(1e-6, 1e6, allow_nan=False, allow_infinity=False)
_type_dicts = st.builds(
    lambda p, d, r, slo: {"prefill": p, "decode": d, "rate_per_s": r, **({"tbt_slo_s": slo} if slo else {})},
    st.integers(1, 100_000),
    st.integers(1, 100_000),
    _rates,
    st.none() | st.floats(1e-4, 10.0),
)
_batch_times = st.one_of(
    st.builds(lambda a, b: {"kind": "affine", "d0_s": a, "d1_s_per_token": b}, st.floats(1e-6, 1.0), st.floats(0.0, 1e-3)),
    st.builds(
        lambda a, b, c: {"kind": "linear3", "d0_s": a, "d_kv_s_per_token": b, "d_new_s_per_token": c},
        st.floats(1e-6, 1.0),
        st.floats(0.0, 1e-3),
        st.floats(0.0, 1e-3),
    ),
    st.builds(lambda a, b, k: {"kind": "staircase", "c_s": a, "a_s": b, "tile_tokens": k}, st.floats(1e-6, 1.0), st.floats(0.0, 1.0), st.integers(1, 1024)),
)
_arrivals = st.one_of(
    st.just({"kind": "poisson"}),
    st.just({"kind": "deterministic"}),
    st.builds(lambda cv: {"kind": "gamma", "cv": cv}, st.floats(1e-3, 20.0)),
)


@settings(max_examples=60, deadline=None)
@given(
    name=_names,
    capacity=st.integers(1, 10**9),
    batch_time=_batch_times,
    types=st.lists(_type_dicts, min_size=1, max_size=6),
    arrivals=_arrivals,
    names_seed=st.lists(_names, min_size=6, max_size=6, unique=True),
)
def test_random_valid_workload_dicts_round_trip(name, capacity, batch_time, types, arrivals, names_seed):
    doc = {
        "name": name,
        "kv_capacity_tokens": capacity,
        "batch_time": batch_time,
        "types": [{"name": n, **t} for n, t in zip(names_seed, types)],
        "arrivals": arrivals,
    }
    w = workload_from_dict(doc, source="hypothesis")
    resolved = workload_to_dict(w)
    assert workload_from_dict(json.loads(json.dumps(resolved)), source="again") == w
    assert workload_to_dict(workload_from_dict(resolved, source="again")) == resolved
    assert workload_content_sha256(w) == workload_content_sha256(workload_from_dict(resolved, source="again"))


def test_yaml_infinite_rate_is_rejected(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(
        "name: e\nkv_capacity_tokens: 1000\nbatch_time: {kind: affine, d0_s: 1e-2, d1_s_per_token: 3e-7}\n"
        "types: [{name: a, prefill: 1, decode: 2, rate_per_s: .inf}]\n"
    )
    with pytest.raises(InputError, match=r"types\[0\]\.rate_per_s.*inf"):
        load_workload(path)


NESTED_UNKNOWN_KEYS = [
    # (block, document, the field named, the advice)
    ("arrivals", _with("arrivals", {"kind": "gamma", "cv": 2.0, "seed": 3}), "arrivals.seed", "valid keys here: cv, kind"),
    ("arrivals", _with("arrivals", {"kind": "poisson", "cvv": 1.0}), "arrivals.cvv", "did you mean 'cv'"),
    ("arrivals", _with("arrivals", {"kind": "trace", "trace": "builtin:x.csv", "scale": 2}), "arrivals.scale",
     "did you mean 'time_scale'"),
    ("SLO", _with("types.1.tbt_slo", 0.2), "types[1].tbt_slo", "did you mean 'tbt_slo_s'"),
    ("SLO", _with("types.0.ttft_slo_s", 0.5), "types[0].ttft_slo_s", "valid keys here"),
    ("SLO", {**_with("types", ...), "types_from_trace": {"path": "builtin:sharegpt_8k_filtered_stats_llama2_tokenizer.csv",
                                                        "bins": 3, "tbt_slo": 0.2}},
     "types_from_trace.tbt_slo", "did you mean 'tbt_slo_s'"),
]


@pytest.mark.parametrize("block,doc,field,advice", NESTED_UNKNOWN_KEYS, ids=[f"{b}:{f}" for b, _, f, _ in NESTED_UNKNOWN_KEYS])
def test_unknown_keys_in_nested_blocks_are_refused(tmp_path, block, doc, field, advice):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(InputError) as info:
        load_workload(path)
    message = str(info.value)
    assert f"field '{field}'" in message and f"unknown key '{field.rsplit('.', 1)[-1]}'" in message
    assert advice in message and str(path) in message


def test_relative_paths_resolve_from_the_source_file_without_base_dir(tmp_path, monkeypatch):
    trace = tmp_path / "sub" / "t.csv"
    trace.parent.mkdir()
    trace.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n0.0,10,5\n1.5,20,7\n")
    doc = copy.deepcopy(GOOD)
    doc["arrivals"] = {"kind": "trace", "trace": "sub/t.csv"}
    path = tmp_path / "w.yaml"
    path.write_text(yaml.safe_dump(doc))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # a relative path must not resolve from the working directory
    w = workload_from_dict(doc, source=str(path))
    assert w.arrivals.trace == str(trace.resolve())
    # an explicit base_dir wins over the source's folder
    other = tmp_path / "other" / "sub"
    other.mkdir(parents=True)
    (other / "t.csv").write_text(trace.read_text())
    assert workload_from_dict(doc, source=str(path), base_dir=other.parent).arrivals.trace == str((other / "t.csv").resolve())


@pytest.mark.parametrize("path, edge, beyond, message", [
    ("types.1.prefill", 2**53, 2**53 + 1, "must be an integer ≤ 9007199254740992 tokens (2^53), got 9007199254740993"),
    ("kv_capacity_tokens", 2**53, 2**53 + 1, "must be an integer ≤ 9007199254740992 tokens (2^53), got 9007199254740993"),
    ("types.0.rate_per_s", 1e12, 1.01e12, "must be a number in [1e-12, 1e+12] requests/s, got 1010000000000.0"),
    ("types.0.rate_per_s", 1e-12, 0.99e-12, "must be a number in [1e-12, 1e+12] requests/s, got 9.9e-13"),
    ("types.1.tbt_slo_s", 1e12, 2e12, "must be a number in [1e-12, 1e+12] seconds, got 2000000000000.0"),
    ("types.1.tbt_slo_s", 1e-12, 1e-13, "must be a number in [1e-12, 1e+12] seconds, got 1e-13"),
])
def test_workload_numbers_take_their_range_ends_and_refuse_just_beyond(path, edge, beyond, message):
    w = workload_from_dict(_with(path, edge), source="w.yaml")
    got = {"types.1.prefill": lambda: w.types[1].prefill, "kv_capacity_tokens": lambda: w.kv_capacity_tokens,
           "types.0.rate_per_s": lambda: w.types[0].rate_per_s, "types.1.tbt_slo_s": lambda: w.types[1].tbt_slo_s}[path]()
    assert got == edge
    with pytest.raises(InputError) as info:
        workload_from_dict(_with(path, beyond), source="w.yaml")
    assert message in str(info.value) and info.value.source == "w.yaml"


def test_memory_capacity_of_exactly_one_token_and_one_byte_short_of_it():
    # tiny-llama: weights 213,632 B, KV 2·2 layers·2 KV heads·16·2 B = 256 B per token
    from fluid.memory import GIB, kv_capacity_from_dict, memory_capacity

    tiny = model_spec("tiny-llama")
    assert (tiny.weight_bytes, tiny.kv_bytes_per_token) == (213_632, 256)
    one = (213_632 + 256) / GIB
    cap = memory_capacity(one, 1.0, tiny)
    assert (cap.usable_bytes, cap.weight_bytes, cap.reserved_bytes, cap.kv_bytes_per_token) == (213_888, 213_632, 0, 256)
    assert cap.kv_capacity_tokens == 1
    assert memory_capacity(one, 1.0, tiny, dtype_bytes=1).kv_capacity_tokens == 2  # fp8: 128 B per token
    assert memory_capacity(2 * one, 0.5, tiny).kv_capacity_tokens == 1  # the fraction scales the GPU
    assert memory_capacity(one + 1, 1.0, tiny, reserved_gib=1.0).kv_capacity_tokens == 1  # the reserve comes off
    with pytest.raises(InputError, match=r"no room for a KV cache: .* need 0\.00 GiB; use a larger GPU") as info:
        memory_capacity((213_632 + 255) / GIB, 1.0, tiny)
    assert info.value.field == "kv_capacity"
    with pytest.raises(InputError, match=r"need 0\.00 GiB and 1\.0 GiB is reserved; use"):
        memory_capacity(one + 1 - 1 / GIB, 1.0, tiny, reserved_gib=1.0)
    # the same from a workload file's mapping, at the ends of its ranges
    doc = {"gpu_memory_gib": one, "memory_fraction": 1, "model": "tiny-llama"}
    assert kv_capacity_from_dict(doc, source="w.yaml") == 1
    assert kv_capacity_from_dict({**doc, "reserved_gib": 0, "dtype_bytes": 1}, source="w.yaml") == 2
    assert kv_capacity_from_dict({**doc, "dtype_bytes": 2}, source="w.yaml") == 1
    fp32 = {**doc, "gpu_memory_gib": (213_632 + 512) / GIB, "dtype_bytes": 4}  # 512 B per token
    assert kv_capacity_from_dict(fp32, source="w.yaml") == 1
    for key, bad, message in [("memory_fraction", 0, r"\(0, 1\] \(share of GPU memory\), got 0"),
                              ("memory_fraction", 1.01, r"\(0, 1\] \(share of GPU memory\), got 1.01"),
                              ("gpu_memory_gib", 0, r"finite positive number \(GiB\), got 0"),
                              ("reserved_gib", -1.0, "finite non-negative number of GiB, got -1.0"),
                              ("dtype_bytes", True, r"must be 1 \(fp8\), 2 \(bf16/fp16\) or 4 \(fp32\), got True"),
                              ("dtype_bytes", 3, "got 3")]:
        with pytest.raises(InputError, match=message) as info:
            kv_capacity_from_dict({**doc, key: bad}, source="w.yaml")
        assert info.value.field == f"kv_capacity.{key}" and info.value.source == "w.yaml"
    with pytest.raises(InputError, match="no room for a KV cache") as info:
        kv_capacity_from_dict({**doc, "gpu_memory_gib": (213_632 + 255) / GIB}, source="w.yaml")
    assert info.value.source == "w.yaml"


def test_an_inline_model_counts_like_the_named_one_and_its_fields_are_checked():
    from fluid.memory import GIB, kv_capacity_from_dict

    tiny = model_spec("tiny-llama").to_dict()
    del tiny["name"]
    doc = {"gpu_memory_gib": (213_632 + 256) / GIB, "memory_fraction": 1, "model": tiny}
    assert kv_capacity_from_dict(doc, source="w.yaml") == 1
    # floats where floats belong, a left-out optional field, and the model's own dtype (weights and KV halve)
    assert kv_capacity_from_dict({**doc, "model": {**tiny, "rope_theta": 1.5, "rms_norm_eps": 1e-6}}, source="w.yaml") == 1
    assert kv_capacity_from_dict({**doc, "model": {**tiny, "max_position_embeddings": None}}, source="w.yaml") == 1
    assert kv_capacity_from_dict({**doc, "model": {**tiny, "dtype_bytes": 1}}, source="w.yaml") == (213_888 - 106_816) // 128
    for key, bad, message in [("hidden_size", 66, "hidden_size 66 is not a multiple of num_attention_heads 4"),
                              ("num_kv_heads", 0, "must be a positive integer, got 0"),
                              ("vocab_size", 1.5, "must be a positive integer, got 1.5")]:
        with pytest.raises(InputError) as info:
            kv_capacity_from_dict({**doc, "model": {**tiny, key: bad}}, source="w.yaml")
        assert message in str(info.value)
        assert info.value.field == f"kv_capacity.model.{key}" and info.value.source == "w.yaml"


@pytest.mark.parametrize("spec, message", [
    ("nope.yml", "no such workload file 'nope.yml'"),
    ("NOPE.JSON", "no such workload file 'NOPE.JSON'"),
    ("sub/nope", "no such workload file 'sub/nope'"),  # a path, though without a suffix
    ("nope", "'nope' is neither a workload file nor a preset"),  # a bare name: a preset that is not there
])
def test_a_missing_workload_is_called_a_file_or_a_preset_by_how_it_is_written(spec, message):
    with pytest.raises(InputError) as info:
        load_workload(spec)
    assert message in str(info.value)


def test_an_existing_file_wins_over_a_preset_of_the_same_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "p512d20").write_text(yaml.safe_dump(GOOD))
    w = load_workload("p512d20")
    assert w.name == "t" and w.source == "p512d20"
    (tmp_path / "p512d20").unlink()
    assert load_workload("p512d20").source.startswith("preset 'p512d20' (")
