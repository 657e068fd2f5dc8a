"""Arrival streams: rates, CVs and type mix of each kind, determinism, trace replay, SLO tiers."""

from __future__ import annotations

import numpy as np
import pytest

from fluid.errors import InputError
from fluid.workload import ArrivalSpec
from runtime.arrivals import make_requests, parse_tiers
from sim_helpers import small_workload

WORKLOAD = small_workload([(10, 20), (50, 5)], [30.0, 10.0])


def _gaps_of(requests, type_name=None):
    t = np.asarray([r.arrival_s for r in requests if type_name is None or r.type_name == type_name])
    return np.diff(t)


@pytest.mark.parametrize("spec, cv", [(ArrivalSpec(), 1.0), (ArrivalSpec("gamma", cv=2.0), 2.0), (ArrivalSpec("gamma", cv=0.5), 0.5)])
def test_rate_cv_and_mix(spec, cv):
    reqs = make_requests(WORKLOAD, 20_000, seed=5, arrivals=spec)
    gaps = _gaps_of(reqs)
    assert 1 / gaps.mean() == pytest.approx(40.0, rel=0.03)
    per_type = _gaps_of(reqs, "t0")
    assert per_type.std() / per_type.mean() == pytest.approx(cv, rel=0.06)  # each type's own renewal process
    share = np.mean([r.type_name == "t0" for r in reqs])
    assert share == pytest.approx(0.75, abs=0.015)


def test_poisson_superposition_is_poisson():
    gaps = _gaps_of(make_requests(WORKLOAD, 20_000, seed=6))
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.04)


def test_deterministic_is_exact():
    reqs = make_requests(WORKLOAD, 400, seed=0, arrivals=ArrivalSpec("deterministic"))
    assert np.allclose(_gaps_of(reqs, "t0"), 1 / 30) and np.allclose(_gaps_of(reqs, "t1"), 1 / 10)
    assert sum(r.type_name == "t0" for r in reqs) == 300


def test_lengths_come_from_types_and_same_seed_same_stream():
    a = make_requests(WORKLOAD, 500, seed=11)
    b = make_requests(WORKLOAD, 500, seed=11)
    c = make_requests(WORKLOAD, 500, seed=12)
    key = lambda rs: [(r.arrival_s, r.type_name, r.prompt_tokens, r.output_tokens) for r in rs]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)
    assert [r.request_id for r in a] == list(range(500))
    for r in a:
        t = WORKLOAD.types[int(r.type_name[1])]
        assert (r.prompt_tokens, r.output_tokens) == (t.prefill, t.decode)


def test_rate_scale_speeds_up():
    base = make_requests(WORKLOAD, 5000, seed=1)
    fast = make_requests(WORKLOAD, 5000, seed=1, rate_scale=2.0)
    assert fast[-1].arrival_s == pytest.approx(base[-1].arrival_s / 2, rel=1e-9)


def test_tiers():
    tiers = parse_tiers("0.05:0.1,0.95:0.5")
    reqs = make_requests(WORKLOAD, 20_000, seed=2, tiers=tiers)
    paying = [r for r in reqs if r.tier == 0]
    assert len(paying) / len(reqs) == pytest.approx(0.05, abs=0.006)
    assert {r.tbt_slo_s for r in paying} == {0.1} and {r.tbt_slo_s for r in reqs if r.tier == 1} == {0.5}
    # tiers do not disturb the arrival times
    assert [r.arrival_s for r in reqs[:50]] == [r.arrival_s for r in make_requests(WORKLOAD, 50, seed=2)]
    with pytest.raises(InputError):
        parse_tiers("0.5:0.1,0.4:0.5")
    with pytest.raises(InputError):
        parse_tiers("half:0.1")


def test_trace_replay(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n"
        "2023-11-16 18:15:46.0000000,12,20\n"
        "2023-11-16 18:15:47.0000000,48,4\n"
        "2023-11-16 18:15:49.0000000,9,18\n",
        encoding="utf-8",
    )
    reqs = make_requests(WORKLOAD, 3, arrivals=ArrivalSpec("trace", trace=str(path), time_scale=0.5))
    assert [r.arrival_s for r in reqs] == pytest.approx([0.0, 0.5, 1.5])
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(12, 20), (48, 4), (9, 18)]
    assert [r.type_name for r in reqs] == ["t0", "t1", "t0"]  # nearest type in log lengths
    faster = make_requests(WORKLOAD, 3, arrivals=ArrivalSpec("trace", trace=str(path)), rate_scale=4.0)
    assert faster[2].arrival_s == pytest.approx(0.75)
    with pytest.raises(InputError, match="rows"):
        make_requests(WORKLOAD, 10, arrivals=ArrivalSpec("trace", trace=str(path)))


def test_bad_trace_row_is_an_input_error(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:15:46.0,12,many\n", encoding="utf-8")
    with pytest.raises(InputError, match="bad.csv"):
        make_requests(WORKLOAD, 1, arrivals=ArrivalSpec("trace", trace=str(path)))


@pytest.mark.parametrize("n", [0, -3, 2.5])
def test_bad_request_counts(n):
    with pytest.raises(InputError):
        make_requests(WORKLOAD, n)


@pytest.mark.parametrize("kind, kwargs, field, fragment", [
    ("lognormal", {}, "arrivals.kind", "unknown arrival kind 'lognormal'"),
    ("poisson", {"cv": 1.0}, "arrivals.cv", "cv applies to gamma arrivals only, not 'poisson'"),
    ("deterministic", {"cv": 0.5}, "arrivals.cv", "cv applies to gamma arrivals only, not 'deterministic'"),
    ("trace", {}, "arrivals.trace", "trace arrivals need a trace file (path or builtin:NAME), got None"),
    ("trace", {"trace": ""}, "arrivals.trace", "trace arrivals need a trace file (path or builtin:NAME), got ''"),
    ("poisson", {"trace": "x.csv"}, "arrivals.trace", "a trace file applies to trace arrivals only, not 'poisson'"),
    ("poisson", {"time_scale": 0.5}, "arrivals.time_scale", "time_scale applies to trace arrivals only"),
    ("gamma", {"cv": 2.0, "time_scale": 2.0}, "arrivals.time_scale", "time_scale applies to trace arrivals only"),
    ("trace", {"trace": "x.csv", "time_scale": 0}, "arrivals.time_scale", "must be a finite positive number factor, got 0"),
])
def test_each_arrival_setting_belongs_to_its_kind(kind, kwargs, field, fragment):
    with pytest.raises(InputError) as info:
        ArrivalSpec(kind, **kwargs)
    assert info.value.field == field and fragment in str(info.value)


def test_arrival_specs_write_only_their_own_settings_and_trace_replay_speeds_up_with_the_rates():
    assert ArrivalSpec().to_dict() == {"kind": "poisson"}
    assert ArrivalSpec("deterministic", time_scale=1.0).to_dict() == {"kind": "deterministic"}  # 1 is no setting
    assert ArrivalSpec("gamma", 2).to_dict() == {"kind": "gamma", "cv": 2.0}
    replay = ArrivalSpec("trace", trace="builtin:x.csv", time_scale=0.5)
    assert replay.to_dict() == {"kind": "trace", "trace": "builtin:x.csv", "time_scale": 0.5}
    w = WORKLOAD
    traced = type(w)(w.name, w.kv_capacity_tokens, w.batch_time, w.types, w.source, replay)
    assert traced.scaled(4.0).arrivals == ArrivalSpec("trace", None, "builtin:x.csv", 0.125)  # 4× the rate: gaps ÷ 4
    assert w.scaled(4.0).arrivals is w.arrivals  # other kinds keep their spec
    assert [t.rate_per_s for t in w.scaled(4.0).types] == [120.0, 40.0]
