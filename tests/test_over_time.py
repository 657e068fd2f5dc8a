"""The fluid benchmark over time (fluid/over_time.py): types and rates from replayed requests, the
integration's conservation and equilibrium, the cumulative comparison, and the experiment key."""

from __future__ import annotations

import numpy as np
import pytest

from fluid.batch_time import Linear3BatchTime
from fluid.equilibrium import closed_form
from fluid.errors import InputError
from fluid.ode import PiecewiseRates
from fluid.over_time import (
    benchmark_for_requests,
    benchmark_over_time,
    compare_cumulative,
    replay_rates,
    request_types,
    solvable_workload,
)
from fluid.workload import RequestType, Workload


def _server(rate: float = 10.0) -> Workload:
    types = (RequestType("a", 200, 20, rate * 0.5), RequestType("b", 100, 60, rate * 0.5))
    return Workload("t", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), types)


def test_few_distinct_lengths_are_the_types_exactly():
    prompts, outputs = [200, 100, 200, 100, 50], [20, 60, 20, 60, 5]
    types, which = request_types(prompts, outputs, type_bins=3)
    assert [(t.prefill, t.decode) for t in types] == [(50, 5), (100, 60), (200, 20)]
    assert which.tolist() == [2, 1, 2, 1, 0]


def test_up_to_32_distinct_lengths_are_the_types_by_default_and_33_are_binned():
    # DEFAULT_TYPE_BINS = 32: exactly 32 distinct (prompt, output) pairs stay themselves
    exact, _ = request_types(list(range(1, 33)), list(range(1, 33)))
    assert [t.name for t in exact] == [f"p{k}d{k}" for k in range(1, 33)]
    binned, which = request_types(list(range(1, 34)), list(range(1, 34)))
    assert len(binned) <= 32 and binned[0].name.startswith("d1-")
    assert sorted(set(which.tolist())) == list(range(len(binned)))


def test_many_lengths_are_binned_by_output_quantile_with_bin_means():
    rng = np.random.default_rng(1)
    outputs = rng.integers(1, 400, 2000)
    prompts = rng.integers(10, 3000, 2000)
    types, which = request_types(prompts, outputs, type_bins=16)
    assert len(types) == 16
    for k, t in enumerate(types):  # each type is the mean of its own requests
        assert t.decode == round(outputs[which == k].mean()) and t.prefill == round(prompts[which == k].mean())
    assert abs(sum(types[k].decode for k in which) / outputs.sum() - 1) < 2e-3


def test_binned_types_are_named_by_their_inclusive_output_range():
    # 8 distinct lengths into 2 quantile bins of outputs: [1, 5) and [5, 9), named d1-4 and d5-8;
    # each type has its bin's mean lengths, rounded (1.25 to a one-token prompt; 2.5, 6.5 to even)
    prompts, outputs = [1, 1, 1, 2, 50, 60, 70, 80], [1, 2, 3, 4, 5, 6, 7, 8]
    types, which = request_types(prompts, outputs, type_bins=2)
    assert [(t.name, t.prefill, t.decode) for t in types] == [("d1-4", 1, 2), ("d5-8", 65, 6)]
    assert which.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]


def test_replay_rates_count_each_type_per_bin_and_an_arrival_on_an_edge_opens_the_next_bin():
    rates = replay_rates([0.0, 4.0, 10.0, 19.9], [0, 1, 0, 0], 2, bin_s=10.0)
    assert rates.edges_s.tolist() == [0.0, 10.0, 20.0]
    assert (rates.rates_per_s * 10).tolist() == [[1.0, 1.0], [2.0, 0.0]]
    last = replay_rates([0.0, 20.0], [0, 0], 1, bin_s=10.0)  # exactly on the last edge: one more bin
    assert last.edges_s.tolist() == [0.0, 10.0, 20.0, 30.0] and (last.rates_per_s[:, 0] * 10).tolist() == [1.0, 0.0, 1.0]


def test_the_benchmark_completes_exactly_the_replayed_work_and_empties():
    rng = np.random.default_rng(0)
    n = 400
    arrivals = np.sort(rng.uniform(0, 40, n))
    kind = rng.integers(0, 2, n)
    prompts, outputs = np.where(kind == 0, 200, 100), np.where(kind == 0, 20, 60)
    grid = np.linspace(0, 120, 121)
    bench = benchmark_for_requests(_server(), arrivals, prompts, outputs, grid, bin_s=4.0)
    assert len(bench.types) == 2
    assert bench.completed_decode_tokens[-1] == pytest.approx(outputs.sum(), rel=2e-3)
    assert bench.in_system[-1] < 0.5 and bench.in_system.max() > 1
    assert np.all(np.diff(bench.completed_decode_tokens) >= -1e-6)


def test_constant_rates_reach_throughput_star():
    w = _server()
    w = w.scaled(0.7 * closed_form(w).capacity_scale)
    star = closed_form(w).throughput_star_tokens_per_s
    grid = np.linspace(0, 200, 201)
    rates = PiecewiseRates(np.array([0.0, 400.0]), np.array([[t.rate_per_s for t in w.types]]))
    bench = benchmark_over_time(w, rates, grid, threshold_workload=w)
    assert bench.throughput_tokens_per_s[-1] == pytest.approx(star, rel=1e-3)
    assert bench.threshold_rate_per_s == pytest.approx(w.total_rate_per_s)


def test_thresholds_above_capacity_are_solved_at_the_cap():
    w = _server()
    theta_rate = closed_form(w).capacity_scale * w.total_rate_per_s
    assert solvable_workload(w, 2 * theta_rate).total_rate_per_s == pytest.approx(0.95 * theta_rate)
    assert solvable_workload(w, 0.5 * theta_rate).total_rate_per_s == pytest.approx(0.5 * theta_rate)


def test_compare_cumulative_minimum_from_the_cut_and_at_the_end():
    t = [0.0, 1.0, 2.0, 3.0, 4.0]
    bench = [0.0, 10.0, 20.0, 30.0, 40.0]
    run = [0.0, 1.0, 18.0, 27.0, 40.0]
    assert compare_cumulative(t, run, bench) == {"min": 0.1, "min_at_s": 1.0, "from_s": 1.0, "end": 1.0}
    cut = compare_cumulative(t, run, bench, from_s=2.0)  # the cut itself is included
    assert cut["min"] == pytest.approx(0.9) and cut["min_at_s"] == 2.0 and cut["from_s"] == 2.0
    assert compare_cumulative(t, bench, bench)["min"] == 1.0
    assert compare_cumulative(t, run, [0.0] * 5) == {"min": None, "min_at_s": None, "from_s": None, "end": None}
    with pytest.raises(InputError):
        compare_cumulative(t, run[:-1], bench)


def test_compare_cumulative_starts_at_exactly_the_share_of_the_final_tokens():
    # COMPARE_FROM_SHARE = 2 % of 50 final tokens is 1.0: the sample holding exactly 1.0 is compared
    from fluid.over_time import COMPARE_FROM_SHARE

    assert COMPARE_FROM_SHARE * 50.0 == 1.0
    t = [0.0, 1.0, 2.0, 3.0]
    bench = [0.0, 1.0, 20.0, 50.0]
    run = [0.0, 0.25, 10.0, 45.0]
    assert compare_cumulative(t, run, bench) == {"min": 0.25, "min_at_s": 1.0, "from_s": 1.0, "end": 0.9}
    # a cut between samples starts at the next one, a cut past the share decides alone
    assert compare_cumulative(t, run, bench, from_s=1.5) == {"min": 0.5, "min_at_s": 2.0, "from_s": 2.0, "end": 0.9}


def test_bad_inputs_are_input_errors():
    with pytest.raises(InputError):
        request_types([1, 2], [3], type_bins=4)
    with pytest.raises(InputError):
        request_types([0], [3], type_bins=4)
    with pytest.raises(InputError, match="prompt and output lengths must be positive"):
        request_types([3, 5], [2, 0], type_bins=4)  # a zero-token output
    with pytest.raises(InputError):
        replay_rates([1.0], [0], 1, bin_s=0.0)
    with pytest.raises(InputError):
        benchmark_over_time(_server(), PiecewiseRates(np.array([0.0, 1.0]), np.array([[1.0, 1.0]])), [1.0, 2.0])


def test_the_time_grid_needs_two_increasing_points_from_zero_and_two_are_enough():
    w = _server()
    rates = PiecewiseRates(np.array([0.0, 1.0]), np.array([[t.rate_per_s for t in w.types]]))
    bench = benchmark_over_time(w, rates, [0.0, 0.5], threshold_workload=w)
    assert bench.time_s.tolist() == [0.0, 0.5] and bench.generated_decode_tokens[0] == 0.0
    assert bench.to_dict()["time_s"] == [0.0, 0.5] and bench.to_dict()["types"] == 2
    for grid in ([0.0], [0.0, 1.0, 1.0], [0.0, 2.0, 1.0], [[0.0, 1.0]], [0.5, 1.0]):
        with pytest.raises(InputError, match="the time grid must start at 0 and increase") as info:
            benchmark_over_time(w, rates, grid, threshold_workload=w)
        assert info.value.field == "grid_s"


def test_replayed_arrivals_must_be_finite_and_not_before_zero():
    assert replay_rates([0.0], [0], 1, bin_s=0.5).edges_s.tolist() == [0.0, 0.5]  # an arrival at 0 is fine
    for times, bin_s in (([-0.1, 1.0], 1.0), ([0.0, np.nan], 1.0), ([0.0, np.inf], 1.0), ([0.0], -1.0)):
        with pytest.raises(InputError, match="needs finite arrival times ≥ 0 and bin_s > 0"):
            replay_rates(times, [0] * len(times), 1, bin_s=bin_s)


def test_experiment_key_fluid_over_time(tmp_path):
    from validation.experiment import experiment_from_dict

    base = {"name": "x", "workloads": ["p512d20"], "loads": [0.5], "policies": ["fcfs"]}
    assert experiment_from_dict(base, source="f").fluid_over_time is None
    assert experiment_from_dict({**base, "fluid_over_time": True}, source="f").fluid_over_time == {"time_bins": 60, "type_bins": 32}
    for bad in ({"time_bin": 3}, {"time_bins": 0}, "yes"):
        with pytest.raises(InputError) as err:
            experiment_from_dict({**base, "fluid_over_time": bad}, source="f")
        assert "fluid_over_time" in str(err.value)


# --- the drift benchmark is not served work before it arrives (docs/adaptive.md) ---------------------
def test_the_drift_benchmark_generates_nothing_of_a_burst_before_its_own_rate_bin():
    # one request at 0 s, then 40 arriving in 154.5-155 s: with the 1 s replay bins the fluid starts the
    # burst at 154 s at the earliest; the span's 60 bins (5 s) used to start it at 150 s, before it existed
    from validation import drift
    from validation.drift import Profile

    rows = [(0.0, 200, 20)] + [(154.5 + 0.0125 * k, 200, 20) for k in range(40)] + [(300.0, 200, 20)]
    profile = Profile(np.array([0.0, 300.0]), np.array([20.0]), np.array([1.0]))  # thresholds solved at 20 req/s
    bench = drift._fluid_curve(_server(), profile, 400.0, 0.5, rows)
    t, gen = bench.time_s, bench.generated_decode_tokens
    first = gen[np.searchsorted(t, 100.0)]
    assert first == pytest.approx(20.0, rel=1e-3)  # the first request, done long before
    assert gen[np.searchsorted(t, 154.0)] == pytest.approx(first, abs=1e-6)  # nothing of the burst by 154 s
    assert gen[np.searchsorted(t, 156.0)] > first + 400  # the burst generates once it has arrived
    assert gen[-1] == pytest.approx(42 * 20, rel=1e-3)  # and the benchmark serves exactly the requests


def test_the_replay_thresholds_are_solved_at_the_rate_given_not_at_the_busiest_short_bin():
    rng = np.random.default_rng(3)
    arrivals = np.sort(rng.uniform(0, 60, 300))
    prompts, outputs = np.full(300, 200), np.full(300, 20)
    server = Workload("t", 50_000, Linear3BatchTime(0.0093, 2.6e-7, 4.7e-5), (RequestType("a", 200, 20, 5.0),))
    grid = np.linspace(0, 90, 91)
    given = benchmark_for_requests(server, arrivals, prompts, outputs, grid, bin_s=1.0, threshold_rate_per_s=5.0)
    busiest = benchmark_for_requests(server, arrivals, prompts, outputs, grid, bin_s=1.0)
    assert given.threshold_rate_per_s == pytest.approx(5.0)
    assert busiest.threshold_rate_per_s > 5.0  # a 1 s bin of a 5 req/s stream holds more than 5 now and then


def test_a_prompts_residence_in_the_benchmark_is_the_delay_of_16_compartments():
    # ΔT = d0 = 0.01 s fixed (no per-token cost), 10 prompts arriving evenly over 0.1 s, each with
    # 200 decode stages split into DEFAULT_MAX_COMPARTMENTS = 16 groups (8 of 13 stages, 8 of 12):
    # the completion time is arrival + prefill (1 iteration) + 16 exponential stays of w_k
    # iterations, so its mean is 0.05 + 201·ΔT and its variance 0.1²/12 + ΔT²(1 + 8·13² + 8·12²)
    from fluid.batch_time import AffineBatchTime

    w = Workload("e", 10**9, AffineBatchTime(0.01, 0.0), (RequestType("a", 1, 200, 1.0),))
    rates = PiecewiseRates(np.array([0.0, 0.1]), np.array([[100.0]]))
    grid = np.linspace(0.0, 10.0, 2001)
    bench = benchmark_over_time(w, rates, grid, threshold_workload=w.scaled(1000.0))  # thresholds far above λ
    done = bench.completed_decode_tokens / 200
    assert done[-1] == pytest.approx(10.0, rel=1e-6)
    step, mid = np.diff(done), (grid[1:] + grid[:-1]) / 2
    mean = (step * mid).sum() / done[-1]
    assert mean == pytest.approx(0.05 + 201 * 0.01, rel=1e-5)
    assert (step * mid**2).sum() / done[-1] - mean**2 == pytest.approx(0.1**2 / 12 + 1e-4 * 2505, rel=1e-3)


def test_replayed_work_reaches_the_benchmark_no_earlier_than_its_one_second_bin():
    # REPLAY_BIN_S = 1 s: a request arriving at 1.5 s is spread over [1, 2) and one at 3.2 s over
    # [3, 4), so nothing is generated before 1 s, and the first request's 20 tokens are all there
    # is between 2.5 s and 3 s
    from fluid.over_time import REPLAY_BIN_S

    grid = np.linspace(0, 4, 9)
    bench = benchmark_for_requests(_server(), [1.5, 3.2], [100, 100], [20, 20], grid, bin_s=REPLAY_BIN_S)
    gen = bench.generated_decode_tokens
    assert gen[:3].tolist() == pytest.approx([0.0, 0.0, 0.0], abs=1e-6) and gen[3] > 5
    assert gen[5:7].tolist() == pytest.approx([20.0, 20.0], rel=1e-6) and gen[-1] > 25


@pytest.mark.parametrize(("prompts", "outputs"), [([0, 5], [3, 3]), ([5, 5], [3, 0])])
def test_a_request_of_zero_prompt_or_output_tokens_is_refused(prompts, outputs):
    with pytest.raises(InputError, match="prompt and output lengths must be positive") as err:
        request_types(prompts, outputs)
    assert err.value.field == "requests"


def test_one_token_prompts_and_outputs_are_types_with_placeholder_rates_of_one():
    types, which = request_types([1, 1, 2], [1, 1, 1])
    assert [(t.name, t.prefill, t.decode, t.rate_per_s) for t in types] == [("p1d1", 1, 1, 1.0), ("p2d1", 2, 1, 1.0)]
    assert which.tolist() == [0, 0, 1]


def test_the_replay_types_carry_the_requests_mix_even_in_one_bin_of_a_day():
    # one bin of 86,400 s holding 3 requests of (100, 60) and 1 of (200, 20): each type's rate is its
    # requests over the replayed span (3/86400 and 1/86400 req/s), and the thresholds are solved at
    # the busiest bin's 4/86400 req/s with that 3 : 1 mix. A type total of count/bin² (1.3e-10 for
    # one request) would fall below the 1e-9 floor of an empty type and make the mix 1 : 1
    day = 86_400.0
    bench = benchmark_for_requests(_server(), [0.0, 600.0, 3_600.0, 50_000.0], [100, 200, 100, 100], [60, 20, 60, 60],
                                   [0.0, 1.0], bin_s=day)
    assert [(t.prefill, t.decode) for t in bench.types] == [(100, 60), (200, 20)]
    assert bench.threshold_rate_per_s == pytest.approx(4 / day, rel=1e-12)
    assert [t.rate_per_s for t in bench.types] == pytest.approx([3 / day, 1 / day], rel=1e-12)
