"""`fluid.numbers.check_number`, the one home of number checks, and the call sites routed through it.

Where two hand-written checks disagreed before they were routed through it, the tests below pin
which rule was kept: booleans are never numbers, a count is an integer, and a bad value is an
`InputError` naming the field (exit 2), never a TypeError from deep inside.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from fluid.errors import InputError
from fluid.numbers import check_number


def test_whole_float_takes_seven_point_zero_as_the_integer_seven_and_only_then():
    assert check_number(7.0, "n", integer=True, whole_float=True) == 7
    assert type(check_number(7.0, "n", integer=True, whole_float=True)) is int
    with pytest.raises(InputError, match=r"field 'n': must be an integer, got 7\.0 \(write it without a decimal point\)"):
        check_number(7.0, "n", integer=True)
    with pytest.raises(InputError, match=r"got 7\.5$"):
        check_number(7.5, "n", integer=True, whole_float=True)
    with pytest.raises(InputError, match="got True"):
        check_number(True, "n", integer=True, whole_float=True)


def test_also_and_hint_place_their_words_around_the_bad_value():
    with pytest.raises(InputError) as err:
        check_number(0, "segments", integer=True, minimum=1, what="segments", also="or 'auto'", hint="; pick one")
    assert str(err.value) == "field 'segments': segments must be a positive integer or 'auto', got 0; pick one"
    with pytest.raises(InputError) as err:
        check_number(-1, "m", minimum=0, allow_none=True, also="or 'auto'")
    assert str(err.value) == "field 'm': must be a finite non-negative number or 'auto' or null, got -1"


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1e-12, True), (1, True), (1.0000001, False), (math.nan, False)])
def test_a_half_open_range_takes_its_closed_end_and_not_its_open_one(value, ok):
    call = lambda: check_number(value, "f", minimum=0, strict_minimum=True, maximum=1)  # noqa: E731
    if ok:
        assert call() == value
    else:
        with pytest.raises(InputError, match=r"must be a number in \(0, 1\]"):
            call()


def test_importing_the_number_checks_loads_nothing_heavy():
    code = ("import sys, fluid.numbers; heavy = [m for m in ('numpy', 'scipy', 'cvxpy', 'torch', 'sympy') if m in sys.modules]; "
            "print(heavy); sys.exit(1 if heavy else 0)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stdout + run.stderr


# --- call sites, at their boundaries ------------------------------------------------------------

def test_slai_high_kv_use_fraction_takes_exactly_one_and_refuses_zero():
    from runtime.kv_blocks import KVBlockManager
    from runtime.schedulers.slai import SlaiScheduler

    assert SlaiScheduler(KVBlockManager(1024, 16), high_kv_use_fraction=1).high_kv_use_fraction == 1
    for bad in (0, 1.01, True):
        with pytest.raises(InputError, match=rf"field 'high_kv_use_fraction': must be a number in \(0, 1\], got {bad!r}"):
            SlaiScheduler(KVBlockManager(1024, 16), high_kv_use_fraction=bad)
    with pytest.raises(InputError, match="field 'offset_low': must be a finite non-negative number, got -1"):
        SlaiScheduler(KVBlockManager(1024, 16), offset_low=-1)
    assert SlaiScheduler(KVBlockManager(1024, 16), offset_low=0).offset_low == 0


def test_adaptive_capacity_fraction_just_below_one_passes_and_one_says_why_not():
    from thresholds.adaptive import AdaptiveSettings

    assert AdaptiveSettings(max_capacity_fraction=0.999).max_capacity_fraction == 0.999
    with pytest.raises(InputError, match=r"adaptive.max_capacity_fraction'.*\(0, 1\), got 1 \(caps explode at capacity\)"):
        AdaptiveSettings(max_capacity_fraction=1)


def test_slack_takes_zero_and_refuses_one_with_its_meaning():
    from thresholds.wait import check_slack

    assert check_slack(0) == 0.0
    with pytest.raises(InputError, match=r"slack must be a number in \[0, 1\), got 1 \(target utilisation"):
        check_slack(1)


def test_trace_cells_name_the_column_and_say_fix_or_delete_the_row(tmp_path):
    from fluid.traces import _int_cell, _seconds_cell

    with pytest.raises(InputError, match=r"x\.csv row 3: column num_decode_tokens must be a positive integer number of tokens, got 0; fix or delete the row"):
        _int_cell("0", where="x.csv row 3", column="num_decode_tokens")
    assert _int_cell("1", where="x.csv row 3", column="num_decode_tokens") == 1
    with pytest.raises(InputError, match=r"column arrived_at must be a finite number of seconds, got inf; fix or delete the row"):
        _seconds_cell("inf", where="x.csv row 3", column="arrived_at")


# --- where two checks disagreed: which rule was kept ---------------------------------------------

def test_nested_horizon_refuses_a_boolean_as_every_other_reader_does():
    # before: `isinstance(True, (int, float))` let True through as a 1-second horizon
    from thresholds.nested import NestedOptions

    with pytest.raises(InputError, match="field 'horizon_s': horizon must be a finite positive number of seconds, got True"):
        NestedOptions(horizon_s=True)
    assert NestedOptions(horizon_s=1).horizon_s == 1
    assert NestedOptions(segments=None).segments is None and NestedOptions(segments="auto").segments == "auto"
    with pytest.raises(InputError, match="segments must be a positive integer or 'auto', got 0$"):
        NestedOptions(segments=0)


def test_a_fractional_segment_count_is_an_input_error_not_a_type_error():
    # before: 2.5 passed the `< 1` check and `range` raised TypeError deep inside
    from thresholds.segments import LengthDistribution, breakpoints

    dist = LengthDistribution.from_pairs([(4, 1.0), (9, 1.0)])
    with pytest.raises(InputError, match="field 'segments': must be a positive integer number of segments, got 2.5"):
        breakpoints(dist, "quantile", 2.5)


def test_a_max_wait_that_is_not_a_number_is_an_input_error_not_a_type_error():
    # before: math.isfinite('5') raised TypeError
    from thresholds.build import _common

    with pytest.raises(InputError, match="field 'max_wait_s': max wait must be a finite non-negative number of seconds, got '5'"):
        _common(None, "cohort", 0.01, "5", {}, None)


def test_a_boolean_is_not_an_ode_horizon_nor_a_compartment_count():
    # before: `isinstance(True, (int, float))` / `isinstance(True, int)` let True through as 1
    from fluid.ode import simulate_fluid

    w = _small_workload()
    with pytest.raises(InputError, match="field 'duration_s': ODE horizon must be a finite positive number of seconds, got True"):
        simulate_fluid(w, True)
    with pytest.raises(InputError, match="field 'max_compartments': must be a positive integer, got True"):
        simulate_fluid(w, 1.0, max_compartments=True)


def test_a_boolean_rate_scale_is_refused_and_a_small_one_passes():
    # before: math.isfinite(True) and True > 0 scaled every rate by 1
    w = _small_workload()
    with pytest.raises(InputError, match="field 'rate_scale': rate scale must be a finite positive number factor, got True"):
        w.scaled(True)
    assert w.scaled(1e-6).types[0].rate_per_s == pytest.approx(2e-6)
    with pytest.raises(InputError, match="got 0"):
        w.scaled(0)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (0.999, True), (1, False), (-0.1, False), (None, False)])
def test_the_experiment_warmup_fraction_follows_the_per_workload_rule(value, ok):
    # before: the top-level warmup_fraction took any finite number (-0.1, 1, 7), a workload's own [0, 1)
    from validation.experiment import experiment_from_dict

    base = {"name": "x", "workloads": ["p512d20"], "loads": [0.5], "policies": ["fcfs"], "warmup_fraction": value}
    per_workload = {**base, "warmup_fraction": 0.1, "workloads": [{"workload": "p512d20", "warmup_fraction": value}]}
    if ok:
        assert experiment_from_dict(base, source="e.yaml").warmup_fraction == value
        assert experiment_from_dict(per_workload, source="e.yaml").workloads[0].warmup_fraction == value
    else:
        with pytest.raises(InputError, match=rf"e\.yaml, field 'warmup_fraction': must be a number in \[0, 1\) \(a fraction\), got {value!r}"):
            experiment_from_dict(base, source="e.yaml")
    if value is None:  # a workload without its own fraction takes the experiment's
        assert experiment_from_dict(per_workload, source="e.yaml").workloads[0].warmup_fraction is None


def test_plugin_settings_refuse_an_infinite_wait_but_keep_a_policy_built_without_a_drain_timer():
    # before: `math.isnan(v) or v < 0` let an infinite drain_max_wait_s / log_interval_s through
    from integrations.vllm.config import plan_from_settings
    from runtime.policy_file import RuntimeClass, RuntimePolicy

    policy = RuntimePolicy("wait", "continuous", classes=(RuntimeClass("a", 10, 10, 2),))
    assert policy.drain_max_wait_s == math.inf and plan_from_settings({}, policy).drain_max_wait_s == math.inf
    assert plan_from_settings({"drain_max_wait_s": 0}, policy).drain_max_wait_s == 0.0
    for key in ("drain_max_wait_s", "log_interval_s"):
        with pytest.raises(InputError, match=rf"field 'fluidsched\.{key}': must be a finite non-negative number of seconds, got inf"):
            plan_from_settings({key: math.inf}, policy)


def test_drift_profile_numbers_amplitude_just_below_the_mean_and_a_finite_grid():
    # before: grid_s = inf passed (`not inf > 0` is False); a missing sine key raised KeyError
    from validation import drift

    profile = {"kind": "sine", "duration_s": 10, "period_s": 5, "mean": 0.5, "amplitude": 0.5}
    with pytest.raises(InputError, match=r"field 'grid_s': grid_s must be a finite positive number of seconds, got inf"):
        drift.DriftExperiment(name="x", workload="p512d20", policy="wait", profile=profile, grid_s=math.inf)
    exp = drift.DriftExperiment(name="x", workload="p512d20", policy="wait", profile=profile)
    from fluid.workload_io import load_workload

    w = load_workload("p512d20")
    with pytest.raises(InputError, match=r"field 'profile.amplitude': sine amplitude must be a number in \(0, 0\.5\), got 0\.5"):
        drift.build_profile(exp, w)
    below = drift.DriftExperiment(name="x", workload="p512d20", policy="wait", profile={**profile, "amplitude": 0.499})
    assert drift.build_profile(below, w)[0].peak_rate_per_s() > 0
    with pytest.raises(InputError, match="field 'profile.duration_s': sine duration_s must be a finite positive number, got None"):
        drift.build_profile(drift.DriftExperiment(name="x", workload="p512d20", policy="wait", profile={"kind": "sine"}), w)


def _small_workload():
    from fluid.batch_time import AffineBatchTime
    from fluid.workload import RequestType, Workload

    return Workload("w", 1000, AffineBatchTime(0.01, 1e-5), (RequestType("a", 10, 5, 2.0),))
