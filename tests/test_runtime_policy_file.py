"""The runtime's view of a policy file: the one reader (thresholds.policy) checks it, the view keeps what
schedulers serve; good files load, bad ones fail with field paths."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest

from fluid.errors import InputError
from runtime.policy_file import RuntimeClass, RuntimePolicy, RuntimeSegment, as_policy, load_policy, policy_from_dict

DATA = Path(__file__).parent / "data"

WAIT_DOC = {
    "schema_version": 2,
    "policy": "wait",
    "service_rule": "cohort",
    "workload": {"name": "w", "content_sha256": "0" * 64, "rates_per_s": {"a": 2.0, "b": 1.0}},
    "kv_capacity_tokens": 4000,
    "batch_time": {"kind": "affine", "d0_s": 0.01, "d1_s_per_token": 1e-5},
    "fluid": {"memory_star_tokens": 1.0, "iteration_time_star_s": 0.01, "throughput_star_tokens_per_s": 40.0,
              "load_factor": 0.1, "capacity_scale": 3.0},
    "guarantees": {"memory_policy_tokens": 900.0, "buffer_tokens": 0, "memory_required_tokens": 900.0,
                   "delta": None, "horizon_s": None, "conditions": []},
    "drain": {"max_wait_s": 0.5},
    "options": {"slack": 0.1, "linear_batch_time": {"d0_s": 0.01, "d_kv_s_per_token": 1e-5, "d_new_s_per_token": 0.0}},
    "classes": [
        {"name": "a", "prefill": 10, "decode": 10, "rate_per_s": 2.0, "threshold": 3},
        {"name": "b", "prefill": 10, "decode": 20, "rate_per_s": 1.0, "threshold": 2},
    ],
}

NESTED_DOC = {
    **{k: v for k, v in WAIT_DOC.items() if k != "classes"},
    "policy": "nested_wait",
    "segments": [
        {"first_stage": 0, "last_stage": 20, "threshold": 4, "continue_prob": 0.4, "theta": None},
        # θ_2 = ln 2.25 solves exp(−2θ)(1 − 0.4 + 0.4 e^θ)^4 = 1
        {"first_stage": 21, "last_stage": 40, "threshold": 2, "continue_prob": 0.0, "theta": math.log(2.25)},
    ],
    "memory_required_tokens": 1200.0,
    "prefill_mode": "representative",
    "representative_prefill_tokens": 10,
}


def _write(tmp_path, doc) -> Path:
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(doc))
    return path


def test_a_wait_file_written_per_the_format_loads(tmp_path):
    policy = load_policy(_write(tmp_path, WAIT_DOC))
    assert policy.policy == "wait" and policy.service_rule == "cohort"
    assert policy.classes == (RuntimeClass("a", 10, 10, 3, 2.0), RuntimeClass("b", 10, 20, 2, 1.0))
    assert policy.drain_max_wait_s == 0.5
    assert policy.kv_capacity_tokens == 4000 and policy.memory_policy_tokens == 900.0
    assert policy.source == str(tmp_path / "policy.json")


def test_a_nested_file_loads_with_segments_and_instances(tmp_path):
    doc = copy.deepcopy(NESTED_DOC)
    doc["prefill_mode"] = "per_class"
    doc["instances"] = [{"prefill_tokens": 10, "type_names": ["a"], "segments": doc["segments"], "memory_required_tokens": 5.0}]
    policy = load_policy(_write(tmp_path, doc))
    assert policy.is_nested and policy.drain_max_wait_s == 0.5
    assert policy.segments[1] == RuntimeSegment(21, 40, 2, 0.0, math.log(2.25))
    assert policy.instances[0].type_names == ("a",) and policy.instances[0].segments == policy.segments
    assert policy.solved_for.content_sha256 == "0" * 64 and dict(policy.solved_for.rates_per_s) == {"a": 2.0, "b": 1.0}


def test_a_drain_timer_of_null_is_refused_as_the_schema_refuses_it(tmp_path):
    """The file always sets the drain timer (the JSON Schema requires a number ≥ 0)."""
    doc = copy.deepcopy(NESTED_DOC)
    doc["drain"]["max_wait_s"] = None
    err = _error(doc, tmp_path)
    assert err.field == "drain.max_wait_s" and "got None" in str(err)


def test_a_continuation_probability_above_one_is_refused(tmp_path):
    doc = copy.deepcopy(NESTED_DOC)
    doc["segments"][0]["continue_prob"] = 1.5
    err = _error(doc, tmp_path)
    assert err.field == "segments[0].continue_prob" and "below 1, got 1.5" in str(err)


def test_thresholds_that_break_their_conditions_are_refused_on_load(tmp_path):
    """n_2 / n_1 = 2/4 is not above p_1 = 0.5: the ratio condition of Nested WAIT breaks."""
    doc = copy.deepcopy(NESTED_DOC)
    doc["segments"][0]["continue_prob"] = 0.5
    doc["segments"][1]["theta"] = None
    err = _error(doc, tmp_path)
    assert err.field is None and "violate their conditions" in str(err) and "ratio" in str(err)


@pytest.mark.parametrize("name", ["golden_policy_wait.json", "golden_policy_nested.json"])
def test_the_golden_files_of_the_solver_load(name):
    path = DATA / name
    if not path.exists():
        pytest.skip(f"{name} not shipped")
    policy = load_policy(path)
    assert policy.classes or policy.segments


def _error(doc, tmp_path) -> InputError:
    with pytest.raises(InputError) as info:
        load_policy(_write(tmp_path, doc))
    return info.value


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d.pop("schema_version"), "schema_version", "missing"),
        (lambda d: d.update(schema_version=1), "schema_version", "unsupported version 1"),
        (lambda d: d.update(schema_version="1"), "schema_version", "'1'"),
        (lambda d: d.update(polcy="wait"), "polcy", "did you mean 'policy'"),
        (lambda d: d.pop("drain"), "drain", "required key is missing"),
        (lambda d: d["drain"].update(max_wait=1), "drain.max_wait", "did you mean 'max_wait_s'"),
        (lambda d: d["drain"].update(max_wait_s=-1), "drain.max_wait_s", "-1"),
        (lambda d: d["classes"][1].update(threshold=-2), "classes[1].threshold", "got -2"),
        (lambda d: d["classes"][1].update(threshold=2.5), "classes[1].threshold", "got 2.5"),
        (lambda d: d["classes"][1].update(threshold=0), "classes[1].threshold", "positive integer, got 0"),
        (lambda d: d["classes"][0].update(treshold=1), "classes[0].treshold", "did you mean 'threshold'"),
        (lambda d: d["classes"][0].pop("decode"), "classes[0].decode", "required key is missing"),
        (lambda d: d["classes"][1].update(name="a"), "classes", "unique"),
        (lambda d: d.update(service_rule="greedy"), "service_rule", "'greedy'"),
        (lambda d: d.update(segments=[]), "segments", "unknown key"),
        (lambda d: d.update(classes=[]), "classes", "non-empty"),
        (lambda d: d.update(policy="fcfs"), "policy", "'fcfs'"),
    ],
)
def test_bad_wait_files_name_the_field(tmp_path, mutate, field, words):
    doc = copy.deepcopy(WAIT_DOC)
    mutate(doc)
    err = _error(doc, tmp_path)
    assert err.field == field
    assert words in str(err)
    assert str(tmp_path / "policy.json") in str(err)


@pytest.mark.parametrize(
    "mutate, field, words",
    [
        (lambda d: d["segments"][1].update(first_stage=22), "segments[1].first_stage", "must be 21"),
        (lambda d: d["segments"][0].update(first_stage=1), "segments[0].first_stage", "must be 0"),
        (lambda d: d["segments"][1].update(threshold=5), "segments[1].threshold", "non-increasing"),
        (lambda d: d["segments"][1].update(threshold=-1), "segments[1].threshold", "got -1"),
        (lambda d: d["segments"][0].pop("theta"), "segments[0].theta", "required key is missing"),
        (lambda d: d.update(classes=[]), "classes", "unknown key"),
        (lambda d: d.update(prefill_mode="each"), "prefill_mode", "'each'"),
        (lambda d: d.update(prefill_mode="per_class", instances=[{"prefill_tokens": 10, "type_names": "a",
                            "segments": d["segments"], "memory_required_tokens": 1.0}]), "instances[0].type_names", "list"),
    ],
)
def test_bad_nested_files_name_the_field(tmp_path, mutate, field, words):
    doc = copy.deepcopy(NESTED_DOC)
    mutate(doc)
    err = _error(doc, tmp_path)
    assert err.field == field
    assert words in str(err)


def test_unreadable_and_malformed_files(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        load_policy(tmp_path / "absent.json")
    path = tmp_path / "bad.json"
    path.write_text('{"schema_version": 1,\n "policy": }')
    with pytest.raises(InputError, match="line 2, column"):
        load_policy(path)
    with pytest.raises(InputError, match="must hold a JSON object"):
        policy_from_dict([1, 2])


def test_dataclasses_validate_what_tests_build_directly():
    with pytest.raises(InputError, match="threshold"):
        RuntimeClass("a", 10, 10, 0)
    with pytest.raises(InputError, match="unique"):
        RuntimePolicy("wait", "cohort", classes=(RuntimeClass("a", 1, 1, 1), RuntimeClass("a", 2, 2, 1)))
    with pytest.raises(InputError, match="must be 3"):
        RuntimePolicy("nested_wait", "cohort", segments=(RuntimeSegment(0, 2, 2), RuntimeSegment(4, 9, 1)))
    with pytest.raises(InputError, match="drain"):
        RuntimePolicy("wait", "cohort", -1.0, classes=(RuntimeClass("a", 1, 1, 1),))
    # segment 1 must reach past the prefill: stages 0..0 would hold no decode step at all
    with pytest.raises(InputError, match=r"segments\[0\]\.last_stage.*must be ≥ 1 \(first_stage, and ≥ 1\), got 0"):
        RuntimePolicy("nested_wait", "cohort", segments=(RuntimeSegment(0, 0, 2),))
    assert RuntimePolicy("nested_wait", "cohort", segments=(RuntimeSegment(0, 1, 2),)).segments[0].last_stage == 1


def test_as_policy_accepts_paths_and_checks_the_kind(tmp_path):
    path = _write(tmp_path, WAIT_DOC)
    assert as_policy(str(path), "wait").classes[0].name == "a"
    with pytest.raises(InputError, match="nested-wait"):
        as_policy(path, "nested_wait")
    with pytest.raises(InputError, match="RuntimePolicy"):
        as_policy(42, "wait")


def _three_segments(theta_3: float) -> dict:
    # n = 8, 4, 2 with p = 0.4, 0.4: (0.6 + 0.4 x)^(2 n_k) = x^(n_k) has the root x = 2.25 at both
    # boundaries, so θ_2 = θ_3 = ln 2.25; θ_3 is checked against segment 2 (n = 4), not segment 1
    doc = copy.deepcopy(NESTED_DOC)
    doc["segments"] = [
        {"first_stage": 0, "last_stage": 20, "threshold": 8, "continue_prob": 0.4, "theta": None},
        {"first_stage": 21, "last_stage": 40, "threshold": 4, "continue_prob": 0.4, "theta": math.log(2.25)},
        {"first_stage": 41, "last_stage": 60, "threshold": 2, "continue_prob": 0.0, "theta": theta_3},
    ]
    return doc


def test_each_theta_is_checked_against_the_segment_right_before_it(tmp_path):
    from thresholds.conditions import theta_residual
    from thresholds.policy_parse import THETA_TOLERANCE

    policy = load_policy(_write(tmp_path, _three_segments(math.log(2.25))))
    assert [s.threshold for s in policy.segments] == [8, 4, 2]
    assert policy.segments[2].theta == pytest.approx(math.log(2.25), rel=1e-15)
    # against segment 1 (n = 8) ln 2.25 is far from a root: the check must not use it
    assert abs(theta_residual(math.log(2.25), 8, 2, 0.4)) > 1.0
    # the tolerance is relative to n_(k−1) = 4: a residual of 1.5 × 4 × tol is refused (it would pass 8 × tol)
    slope = (theta_residual(math.log(2.25) + 1e-6, 4, 2, 0.4) - theta_residual(math.log(2.25) - 1e-6, 4, 2, 0.4)) / 2e-6
    off = math.log(2.25) + 1.5 * THETA_TOLERANCE * 4 / slope
    assert 5.9 * THETA_TOLERANCE < abs(theta_residual(off, 4, 2, 0.4)) < 6.1 * THETA_TOLERANCE
    err = _error(_three_segments(off), tmp_path)
    assert err.field == "segments[2].theta" and "does not solve" in str(err)
    near = math.log(2.25) + 0.5 * THETA_TOLERANCE * 4 / slope  # within the tolerance: accepted as solved
    assert load_policy(_write(tmp_path, _three_segments(near))).segments[2].theta == near


def test_a_theta_residual_of_exactly_the_tolerance_is_accepted_one_float_more_is_not(tmp_path):
    from thresholds.conditions import theta_residual
    from thresholds.policy_parse import THETA_TOLERANCE

    # after a segment with p = 0 the residual is f(θ) = −θ n_k; with n_k = n_(k−1) = 4 and θ = 1e-6 it
    # is −4e-6, the very float THETA_TOLERANCE · n_(k−1) is: the bound is inclusive (|f| ≤ tol·n)
    doc = copy.deepcopy(NESTED_DOC)
    doc["segments"][0]["continue_prob"] = 0.0
    doc["segments"][1].update(threshold=4, theta=THETA_TOLERANCE)
    assert abs(theta_residual(THETA_TOLERANCE, 4, 4, 0.0)) == THETA_TOLERANCE * 4
    assert load_policy(_write(tmp_path, doc)).segments[1].theta == THETA_TOLERANCE
    doc["segments"][1]["theta"] = math.nextafter(THETA_TOLERANCE, 1.0)
    err = _error(doc, tmp_path)
    assert err.field == "segments[1].theta" and "does not solve" in str(err)
