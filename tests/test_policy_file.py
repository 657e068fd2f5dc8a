"""The policy file: round trip, JSON Schema, golden files, and clear errors for bad files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jsonschema
import pytest

from fluid.batch_time import AffineBatchTime, Linear3BatchTime
from fluid.errors import InputError
from fluid.workload import RequestType, Workload
from thresholds.build import nested_policy, wait_policy
from thresholds.nested import NestedOptions, solve_nested
from thresholds.policy import SCHEMA_PATH, load_policy, policy_to_json, save_policy
from thresholds.wait import solve_wait, solve_wait_batch_cap

DATA = Path(__file__).parent / "data"
SCHEMA = json.loads(SCHEMA_PATH.read_text())
# Regenerate deliberately (a format change) with:
#   fluidsched solve paper-a-two-types --slack 0.05 -o tests/data/golden_policy_wait.json
#   fluidsched solve chat-d-ten-bins --policy nested-wait --segments auto --rate-scale 0.5 --slack 0.05 \
#       -o tests/data/golden_policy_nested.json
#   fluidsched solve p512d1000 --service-rule capped -o tests/data/golden_policy_wait_capped.json
#   fluidsched solve chat-d-ten-bins --policy nested-wait --service-rule capped \
#       -o tests/data/golden_policy_nested_capped.json
GOLDEN = {
    "golden_policy_wait.json": ("paper-a-two-types", 1.0, "wait", NestedOptions()),
    "golden_policy_nested.json": ("chat-d-ten-bins", 0.5, "nested", NestedOptions(segments="auto")),
    "golden_policy_wait_capped.json": ("p512d1000", 1.0, "wait-capped", None),
    "golden_policy_nested_capped.json": ("chat-d-ten-bins", 1.0, "nested-capped", NestedOptions(eta=0.0)),
}


def _two_types() -> Workload:
    return Workload("two", 137000, Linear3BatchTime(0.015, 1e-7, 2e-6),
                    (RequestType("x", 10, 10, 1000.0), RequestType("y", 30, 20, 500.0)))


def _mixed_prefills() -> Workload:
    return Workload("mixed", 10**7, AffineBatchTime(0.02, 5e-8),
                    tuple(RequestType(f"p{p}d{d}", p, d, r) for p, d, r in
                          [(20, 50, 10.0), (20, 200, 5.0), (200, 50, 4.0), (200, 300, 2.0)]))


def _policies():
    w, m = _two_types(), _mixed_prefills()
    yield wait_policy(w, solve_wait(w))
    yield wait_policy(w, solve_wait_batch_cap(w, 64), service_rule="continuous", allow_violations=True)
    yield nested_policy(m, solve_nested(m, NestedOptions()), max_wait_s=2.5)
    yield nested_policy(m, solve_nested(m, NestedOptions(segments="auto")))
    yield nested_policy(m, solve_nested(m, NestedOptions(segments=2, prefill_mode="per_class")))


@pytest.mark.parametrize("index", range(5))
def test_round_trip_and_schema(tmp_path, index):
    policy = list(_policies())[index]
    path = save_policy(policy, tmp_path / "p.json")
    jsonschema.validate(json.loads(path.read_text()), SCHEMA)
    assert load_policy(path) == policy
    assert policy_to_json(load_policy(path)) == path.read_text()


def _close(a, b, path="") -> None:
    """Equal except for floating-point noise (relative 1e-9)."""
    assert type(a) is type(b) or {type(a), type(b)} <= {int, float}, f"{path}: {a!r} vs {b!r}"
    if isinstance(a, dict):
        assert list(a) == list(b), f"{path}: keys {list(a)} vs {list(b)}"
        for k in a:
            _close(a[k], b[k], f"{path}.{k}")
    elif isinstance(a, list):
        assert len(a) == len(b), f"{path}: lengths {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            _close(x, y, f"{path}[{i}]")
    elif isinstance(a, float) or isinstance(b, float):
        assert math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12), f"{path}: {a!r} vs {b!r}"
    else:
        assert a == b, f"{path}: {a!r} vs {b!r}"


@pytest.mark.parametrize("name", sorted(GOLDEN))
def test_golden_policy(name):
    from fluid.workload_io import load_workload

    from thresholds.build import nested_capped_policy, wait_capped_policy
    from thresholds.capped_solve import solve_nested_capped_auto, solve_wait_capped
    from thresholds.slack import choose_slack

    preset, scale, kind, options = GOLDEN[name]
    w = load_workload(preset, rate_scale=scale)
    if kind == "wait":
        fresh = wait_policy(w, solve_wait(w, slack=0.05), slack_rule="given")
    elif kind == "nested":
        fresh = nested_policy(w, solve_nested(w, options), rate_scale=scale, slack_rule="given")
    else:  # the capped goldens pin the automatic slack too
        from dataclasses import replace

        from fluid.equilibrium import closed_form

        at = (lambda s: solve_wait_capped(w, slack=s)) if kind == "wait-capped" else \
            (lambda s: solve_nested_capped_auto(w, replace(options, slack=s)))
        choice = choose_slack(at, lambda sol: sol.memory.required_tokens, closed_form(w).load_factor)
        fresh = (wait_capped_policy(w, choice.solution, slack_rule=choice.reason) if kind == "wait-capped" else
                 nested_capped_policy(w, choice.solution, replace(options, slack=choice.slack), slack_rule=choice.reason))
    golden = json.loads((DATA / name).read_text())
    jsonschema.validate(golden, SCHEMA)
    _close(json.loads(policy_to_json(fresh)), golden)


def _written(tmp_path, mutate, policy=None) -> Path:
    policy = policy or next(_policies())
    raw = policy.to_dict()
    mutate(raw)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(raw))
    return path


@pytest.mark.parametrize("mutate,field,words", [
    (lambda r: r.pop("schema_version"), "schema_version", "missing"),
    (lambda r: r.update(schema_version=1), "schema_version", "unsupported version 1"),
    (lambda r: r.pop("drain"), "drain", "required key is missing"),
    (lambda r: r.update(kv_capacity_tokenz=r.pop("kv_capacity_tokens")), "kv_capacity_tokenz", "did you mean 'kv_capacity_tokens'"),
    (lambda r: r["classes"][1].update(threshold=-3), "classes[1].threshold", "positive integer, got -3"),
    (lambda r: r["classes"][1].update(threshold=2.5), "classes[1].threshold", "must be a positive integer, got 2.5"),
    (lambda r: r["classes"][0].update(treshold=r["classes"][0].pop("threshold")), "classes[0].treshold", "did you mean 'threshold'"),
    (lambda r: r.update(service_rule="greedy"), "service_rule", "'cohort', 'continuous'"),
    (lambda r: r["classes"][0].update(threshold=1), "", "violate their conditions"),
])
def test_bad_wait_files_name_field_and_value(tmp_path, mutate, field, words):
    with pytest.raises(InputError) as info:
        load_policy(_written(tmp_path, mutate))
    assert info.value.field == (field or None) and words in str(info.value)
    assert "bad.json" in str(info.value)


def test_bad_nested_files(tmp_path):
    m = _mixed_prefills()
    policy = nested_policy(m, solve_nested(m, NestedOptions()))
    for mutate, field in [
        (lambda r: r["segments"][1].update(threshold=r["segments"][0]["threshold"] + 1), "segments[1].threshold"),
        (lambda r: r["segments"][1].update(first_stage=0), "segments[1].first_stage"),
        (lambda r: r["segments"][1].update(theta=0.123), "segments[1].theta"),
        (lambda r: r["segments"][0].update(continue_prob=1.5), "segments[0].continue_prob"),
    ]:
        with pytest.raises(InputError) as info:
            load_policy(_written(tmp_path, mutate, policy))
        assert info.value.field == field


def test_not_json_is_input_error(tmp_path):
    path = tmp_path / "x.json"
    path.write_text("{ nope")
    with pytest.raises(InputError, match="line 1"):
        load_policy(path)


@pytest.mark.parametrize("mutate,field", [
    (lambda r: r["workload"].update(name=""), "workload.name"),
    (lambda r: r["classes"][0].update(name=""), "classes[0].name"),
    (lambda r: r["classes"][0].update(name=7), "classes[0].name"),
])
def test_policy_file_names_must_be_non_empty_strings(tmp_path, mutate, field):
    with pytest.raises(InputError, match="must be a non-empty string") as info:
        load_policy(_written(tmp_path, mutate))
    assert info.value.field == field


def test_policy_files_keep_their_notes_readable_not_escaped():
    # the golden nested policy's text fields hold non-ASCII (θ, −, ≥ ...): written as themselves,
    # UTF-8, so a policy file reads as its notes read (and round-trips byte for byte)
    text = (DATA / "golden_policy_nested.json").read_text(encoding="utf-8")
    written = policy_to_json(load_policy(DATA / "golden_policy_nested.json"))
    assert any(ord(c) > 127 for c in written) and "\\u" not in written
    assert written == text
