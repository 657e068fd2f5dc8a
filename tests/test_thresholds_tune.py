"""`solve --service-rule capped --tune`: candidates simulated on the same arrivals, the lowest mean
latency among those meeting the throughput and overflow targets wins."""

from __future__ import annotations

import json

import pytest

from fluid.batch_time import AffineBatchTime
from fluid.equilibrium import closed_form
from fluid.workload import RequestType, Workload
from thresholds.nested import NestedOptions
from thresholds.tune import MAX_OVERFLOW_RATE, TARGET_THROUGHPUT, tune
from validation.cli import main


def _workload() -> Workload:
    w = Workload("tune", 6000, AffineBatchTime(0.01, 2e-6),
                 (RequestType("a", 32, 20, 1.0), RequestType("b", 64, 60, 0.5)))
    return w.scaled(0.7 * closed_form(w).capacity_scale)


def _workload_file(tmp_path):
    from fluid.workload_io import workload_to_dict

    path = tmp_path / "w.json"
    path.write_text(json.dumps(workload_to_dict(_workload())))
    return path


def test_tune_picks_the_lowest_latency_among_admissible_trials():
    for options in (None, NestedOptions()):
        best, trials = tune(_workload(), options, requests=400, seed=1)
        assert len(trials) >= 3 and best in trials
        good = [t for t in trials if t.throughput_ratio >= TARGET_THROUGHPUT and t.overflow_rate <= MAX_OVERFLOW_RATE]
        if good:
            assert best.admissible and best.mean_latency_s == min(t.mean_latency_s for t in good)
        else:
            assert best.throughput_ratio == max(t.throughput_ratio for t in trials)


def test_tune_needs_the_capped_rule_and_records_its_choice(tmp_path, capsys):
    path = _workload_file(tmp_path)
    assert main(["solve", "--service-rule", "cohort", str(path), "--tune", "-o", str(tmp_path / "p.json")]) == 2
    assert "--service-rule capped" in capsys.readouterr().err
    assert main(["solve", str(path), "--service-rule", "capped", "--tune", "--tune-requests", "300",
                 "-o", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    assert "tune: *" in err
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["options"]["slack_rule"].startswith("tuned (")


def test_tune_from_the_cli_writes_the_chosen_nested_wait_trial(tmp_path, capsys):
    import re

    path = _workload_file(tmp_path)
    assert main(["solve", str(path), "--policy", "nested-wait", "--service-rule", "capped", "--tune",
                 "--tune-requests", "300", "-o", str(tmp_path / "p.json")]) == 0
    err = capsys.readouterr().err
    starred = [line for line in err.splitlines() if line.startswith("tune: *")]
    assert len(starred) == 1  # exactly one trial is chosen
    slack = float(re.search(r"slack ([0-9.]+)", starred[0]).group(1))
    doc = json.loads((tmp_path / "p.json").read_text())
    assert doc["policy"] == "nested_wait" and doc["service_rule"] == "capped"
    assert doc["options"]["slack"] == slack  # the file holds the starred trial, not another
    assert doc["options"]["slack_rule"].startswith(f"tuned (slack {starred[0].split('slack ')[1].split(',')[0]}")


def test_the_grid_tries_every_slack_below_the_headroom_zero_included():
    def slacks(load):
        # C large enough that only the load limits the rate: every slack below 1 − L solves
        w = Workload("grid", 10**6, AffineBatchTime(0.01, 2e-6), _workload().types)
        w = w.scaled(load / closed_form(w).load_factor)
        _, trials = tune(w, None, requests=100, seed=1)
        return sorted({float(t.label.split(",")[0].removeprefix("slack ")) for t in trials})

    assert slacks(0.7) == [0.0, 0.02, 0.05, 0.1]  # 1 − L = 0.3: the whole grid
    assert slacks(0.93) == [0.0, 0.02, 0.05]  # 1 − L = 0.07: a slack of 0.1 would leave no load to serve


def test_each_slack_tries_solves_chunk_twice_it_and_whole_prompts():
    from thresholds.capped_solve import solve_wait_capped

    # prompts of 2000 and 4000 tokens: solve's chunk is below the longest prompt, so it is a real choice
    w = Workload("chunky", 200_000, AffineBatchTime(0.01, 2e-7),
                 (RequestType("a", 2000, 20, 2.0), RequestType("b", 4000, 60, 1.0)))
    w = w.scaled(0.7 * closed_form(w).capacity_scale)
    _, trials = tune(w, None, requests=100, seed=1)
    by_slack = {}
    for t in trials:
        by_slack.setdefault(t.label.split(",")[0], []).append(t.solution.prefill_chunk_tokens)
    assert sorted(by_slack) == ["slack 0", "slack 0.02", "slack 0.05", "slack 0.1"]
    for label, chunks in by_slack.items():
        base = solve_wait_capped(w, slack=float(label.removeprefix("slack "))).prefill_chunk_tokens
        assert base is not None and base < 4000
        assert chunks == [base, 2 * base, None]


def test_a_trial_is_measured_after_a_warm_up_of_a_tenth_of_the_arrival_span():
    # the candidate's latency counts the requests that arrived after the first 10 % of the span
    # (runtime.metrics.warmup_cut_s), on the seeded arrivals every candidate shares
    from runtime.arrivals import make_requests
    from thresholds.build import wait_capped_policy
    from thresholds.capped_solve import solve_wait_capped
    from thresholds.tune import _simulate

    w = _workload()
    policy = wait_capped_policy(w, solve_wait_capped(w, slack=0.05))
    summary, _, _ = _simulate(w, policy, "wait-capped", 300, 1)
    arrivals = sorted(r.arrival_s for r in make_requests(w, 300, 1))
    cut = 0.1 * arrivals[-1]
    assert summary.warmup_s == cut
    assert summary.measured_requests == sum(1 for a in arrivals if a >= cut) < 300


def _scripted_tune(monkeypatch, script):
    """tune() on _workload() (four slacks, whole prompts: four trials) with the simulator replaced
    by `script`: one (throughput ratio, mean latency, overflow rate) per trial, in order."""
    from types import SimpleNamespace

    import thresholds.tune as tune_module

    w = _workload()
    star = closed_form(w).throughput_star_tokens_per_s
    runs = iter(script)

    def simulate(workload, policy, scheduler, requests, seed):
        ratio, latency, overflow = next(runs)
        return SimpleNamespace(decode_throughput_tokens_per_s=ratio * star, mean_latency_s=latency), overflow, 0

    monkeypatch.setattr(tune_module, "_simulate", simulate)
    best, trials = tune(w, None, requests=10, seed=0)
    assert len(trials) == len(script)
    assert [t.throughput_ratio for t in trials] == [pytest.approx(r, rel=1e-15) for r, _, _ in script]
    return best, trials


def test_tune_keeps_the_lowest_latency_at_the_targets_edges(monkeypatch):
    # exactly 0.99 of throughput* and exactly 1 % overflow are admissible; 0.98 of throughput* or
    # 1.1 % overflow are not, however low their latency
    best, trials = _scripted_tune(monkeypatch, [(0.99, 2.0, 0.01), (0.98, 0.5, 0.0), (1.0, 0.7, 0.011), (1.0, 1.0, 0.0)])
    assert trials[0].throughput_ratio == 0.99 and trials[0].overflow_rate == 0.01  # at the edges, in floats too
    assert [t.admissible for t in trials] == [True, False, False, True]
    assert best is trials[3]  # 1.0 s beats 2.0 s among the admissible


def test_tune_without_an_admissible_trial_takes_the_highest_throughput(monkeypatch):
    # no latency at all (None) reads as infinite; the highest throughput wins regardless
    best, trials = _scripted_tune(monkeypatch, [(0.9, 1.0, 0.0), (0.95, None, 0.0), (0.97, 3.0, 0.5), (0.5, 0.1, 0.0)])
    assert not any(t.admissible for t in trials)
    assert best is trials[2] and trials[1].mean_latency_s == float("inf")


def test_the_nested_grid_tries_types_at_eta_0_and_auto_at_eta_0_and_0_05(monkeypatch):
    from types import SimpleNamespace

    import thresholds.tune as tune_module

    monkeypatch.setattr(tune_module, "_simulate", lambda *args: (SimpleNamespace(
        decode_throughput_tokens_per_s=1.0, mean_latency_s=1.0), 0.0, 0))
    _, trials = tune(_workload(), NestedOptions(), requests=10, seed=0)
    at_zero = [t for t in trials if t.label.startswith("slack 0,")]
    layouts = [(t.options.segments, t.options.eta) for t in at_zero]
    assert layouts == [(None, 0.0)] + [("auto", 0.0)] * 3 + [("auto", 0.05)] * 3
    assert [t.label.split(", ", 2)[2] for t in at_zero] == (
        ["segments types, η 0"] + ["segments auto, η 0"] * 3 + ["segments auto, η 0.05"] * 3)
    # the segments' own chunk, twice it, whole prompts (types: whole prompts already)
    chunks = [t.options.prefill_chunk_tokens for t in at_zero]
    assert chunks[0] is None and chunks[3] is None and chunks[2] == 2 * chunks[1] and chunks[1:4] == chunks[4:7]


def test_the_tune_requests_flag_defaults_to_tunes_own_request_count_as_its_help_says():
    import argparse
    import inspect

    from thresholds import cli_solve
    from thresholds.tune import tune

    parser = argparse.ArgumentParser()
    cli_solve.add_arguments(parser)
    action = next(a for a in parser._actions if a.dest == "tune_requests")
    default = inspect.signature(tune).parameters["requests"].default
    assert action.default == default == 2000 and f"default {default}" in action.help
