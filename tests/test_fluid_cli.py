"""`fluidsched fluid`: exit codes 0/2/3, JSON keys, LP/ODE sections, table text."""

from __future__ import annotations

import json

import pytest

from validation.cli import main

STABLE = """\
name: two
kv_capacity_tokens: 137000
batch_time: {kind: linear3, d0_s: 0.0093, d_kv_s_per_token: 2.6e-7, d_new_s_per_token: 4.7e-5}
types:
  - {name: short, prefill: 512, decode: 20, rate_per_s: 20.0}
  - {name: long, prefill: 512, decode: 200, rate_per_s: 3.0}
"""
REQUIRED = ("memory_star_tokens", "iteration_time_star_s", "throughput_star_tokens_per_s", "load_factor",
            "capacity_scale", "stable")


@pytest.fixture
def workload_file(tmp_path):
    path = tmp_path / "two.yaml"
    path.write_text(STABLE)
    return path


def _json(capsys):
    return json.loads(capsys.readouterr().out)


def test_stable_json_has_the_contract_keys(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--json"]) == 0
    out = _json(capsys)
    for key in REQUIRED:
        assert key in out
    assert out["stable"] is True and out["load_factor"] < 1 < out["capacity_scale"]
    assert [r["name"] for r in out["types"]] == ["short", "long"]
    assert "lp" not in out and "ode" not in out


def test_lp_capacity_and_ode_sections(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--json", "--lp", "--capacity", "--ode", "60"]) == 0
    out = _json(capsys)
    assert out["lp"]["memory_tokens"] == pytest.approx(out["memory_star_tokens"], rel=1e-6)
    assert out["lp"]["admitted_rate_per_s"] == pytest.approx([20.0, 3.0], rel=1e-6)
    assert set(out["lp"]["duals"]) == {"iteration_time", "kv_memory", "admission_upper"}
    assert out["capacity_lp"]["capacity_scale"] == pytest.approx(out["capacity_scale"], rel=1e-6)
    assert "kv_memory" in out["capacity_lp"]["binding"]
    for policy in ("wait", "fcfs"):
        assert out["ode"][policy]["final_memory_tokens"] == pytest.approx(out["memory_star_tokens"], rel=1e-3)


def test_rate_scale_and_lp_options(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--json", "--rate-scale", "0.5", "--lp", "--batch-cap", "5"]) == 0
    out = _json(capsys)
    assert out["throughput_star_tokens_per_s"] == pytest.approx(0.5 * (20 * 20 + 3 * 200))
    assert "batch_cap" in out["lp"]["binding"]


def test_unstable_exits_3_and_still_prints_json(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--json", "--rate-scale", "2"]) == 3
    captured = capsys.readouterr()
    out = json.loads(captured.out)
    assert out["stable"] is False and out["memory_star_tokens"] is None
    assert f"{out['capacity_scale']:.4g}" in captured.err and "Traceback" not in captured.err


def test_memory_bound_workload_says_what_memory_fits(tmp_path, capsys):
    path = tmp_path / "tight.yaml"
    path.write_text(STABLE.replace("137000", "20000"))
    assert main(["fluid", str(path)]) == 3
    captured = capsys.readouterr()
    assert "UNSTABLE" in captured.out and "KV tokens" in captured.err


def test_table_output(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--lp"]) == 0
    text = capsys.readouterr().out
    for needle in ("load factor L", "KV memory M*", "capacity scale θ*", "binding", "admission_upper", "dual kv_memory"):
        assert needle in text


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["fluid", "no-such-preset-xyz"], "preset"),
        (["fluid", "missing.yaml"], "missing.yaml"),
        (["fluid", "WORKLOAD", "--rate-scale", "-1"], "rate"),
        (["fluid", "WORKLOAD", "--ode", "0"], "--ode"),
        (["fluid", "WORKLOAD", "--lp", "--batch-cap", "-3"], "batch_cap"),
    ],
)
def test_bad_input_exits_2_without_traceback(argv, needle, workload_file, capsys):
    argv = [str(workload_file) if a == "WORKLOAD" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_bad_field_in_file_exits_2(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(STABLE.replace("rate_per_s: 3.0", "rate_per_s: -3.0"))
    assert main(["fluid", str(path)]) == 2
    assert "rate_per_s" in capsys.readouterr().err


def test_infeasible_tbt_slo_exits_3(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--lp", "--tbt-slo", "0.001"]) == 3
    assert "tbt_slo" in capsys.readouterr().err


@pytest.mark.parametrize("scale", ["0", "inf", "nan"])
def test_rate_scale_zero_or_not_finite_exits_2(scale, workload_file, capsys):
    assert main(["fluid", str(workload_file), "--rate-scale", scale]) == 2
    err = capsys.readouterr().err
    assert "--rate-scale" in err and "Traceback" not in err


def test_table_output_has_one_ode_row_per_policy(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--ode", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.split() and ln.split()[0] in ("wait", "fcfs")}
    assert sorted(rows) == ["fcfs", "wait"]
    for cells in rows.values():  # four numbers, no "skipped"
        assert len(cells) == 4 and all(c.replace(".", "").replace("e", "").replace("+", "").replace("-", "").isdigit()
                                        for c in cells), cells


def test_table_output_names_the_ode_policy_it_skipped(workload_file, capsys):
    # twice the rate: WAIT's ODE refuses the load factor, FCFS still integrates (and falls behind)
    assert main(["fluid", str(workload_file), "--ode", "5", "--rate-scale", "2"]) == 3
    lines = capsys.readouterr().out.splitlines()
    wait = next(ln for ln in lines if ln.split()[:1] == ["wait"])
    fcfs = next(ln for ln in lines if ln.split()[:1] == ["fcfs"])
    assert wait.split(None, 1)[1].startswith("skipped: WAIT's default thresholds need the fluid point")
    assert "skipped" not in fcfs


def test_time_mean_is_the_trapezoid_average_by_hand():
    import numpy as np

    from fluid.cli import _time_mean

    # t = 0, 1, 3; y = 0, 2, 4: area (0+2)/2·1 + (2+4)/2·2 = 7 over a span of 3
    assert _time_mean(np.array([0.0, 1.0, 3.0]), np.array([0.0, 2.0, 4.0])) == pytest.approx(7 / 3, rel=1e-15)
    assert _time_mean(np.array([2.0]), np.array([5.0])) == 5.0  # one sample: its value


def test_time_mean_over_no_time_is_the_last_sample_not_the_first():
    import numpy as np

    from fluid.cli import _time_mean

    # samples stamped at one instant (a span of 0): no area to average, the value the run ends in
    assert _time_mean(np.array([2.0, 2.0]), np.array([5.0, 7.0])) == 7.0
    assert _time_mean(np.array([0.0, 0.0, 0.0]), np.array([1.0, 3.0, 4.0])) == 4.0


def test_memory_bound_ode_reports_the_queue_at_the_horizon(tmp_path, capsys):
    from fluid.ode import simulate_fluid
    from fluid.workload_io import load_workload

    path = tmp_path / "tight.yaml"
    path.write_text(STABLE.replace("137000", "20000"))
    assert main(["fluid", str(path), "--json", "--ode", "30"]) == 3  # M* > C: prompts pile up in the queue
    out = _json(capsys)
    for policy in ("wait", "fcfs"):
        queue = simulate_fluid(load_workload(str(path)), 30.0, policy=policy).queue_prompts
        assert queue[1] == 0.0 and queue[-1] > 10  # empty at the start, a growing queue at 30 s
        assert out["ode"][policy]["final_queue_prompts"] == pytest.approx(queue[-1], rel=1e-12)


@pytest.mark.parametrize("prefill,decode,stable", [(600, 400, True), (600, 401, False)])
def test_one_request_larger_than_c_is_unservable_and_exactly_c_fits(tmp_path, capsys, prefill, decode, stable):
    path = tmp_path / "big.yaml"
    # a rare type whose prompt plus output is exactly C = 1000 tokens, then one token more
    path.write_text(STABLE.replace("137000", "1000").replace("rate_per_s: 20.0", "rate_per_s: 0.001")
                    .replace("prefill: 512, decode: 200, rate_per_s: 3.0", f"prefill: {prefill}, decode: {decode}, rate_per_s: 0.001")
                    .replace("prefill: 512, decode: 20", "prefill: 10, decode: 10"))
    assert main(["fluid", str(path), "--json"]) == (0 if stable else 3)
    out = _json(capsys)
    assert out["stable"] is stable
    if not stable:
        assert out["advice"].startswith(f"one request of type 'long' needs 1001 KV tokens (prefill {prefill} + decode {decode})")


def test_print_json_writes_one_indented_object_and_converts_numpy_and_to_dict(capsys):
    import math

    import numpy as np

    from fluid.cli_json import print_json

    class Point:
        def to_dict(self):
            return {"x": 1}

    print_json({"a": np.array([1.5, 2.0]), "n": np.int64(3), "f": np.float64(0.25), "p": Point()})
    out = capsys.readouterr().out
    assert out == '{\n  "a": [\n    1.5,\n    2.0\n  ],\n  "n": 3,\n  "f": 0.25,\n  "p": {\n    "x": 1\n  }\n}\n'
    with pytest.raises(ValueError, match="not JSON compliant"):  # NaN is not JSON: an error, not a silent NaN
        print_json({"bad": math.nan})
    with pytest.raises(TypeError, match="not JSON serialisable: object"):
        print_json({"what": object()})


def test_table_prints_duals_and_objective_per_kv_token_to_four_significant_digits(workload_file, capsys):
    assert main(["fluid", str(workload_file), "--json", "--lp"]) == 0
    lp = _json(capsys)["lp"]
    assert main(["fluid", str(workload_file), "--lp"]) == 0
    lines = capsys.readouterr().out.splitlines()

    def row(label):
        return next(line for line in lines if line.strip().startswith(label)).split()

    per_kv = lp["objective_per_kv_token"]
    assert f"{per_kv:.4g}" != f"{per_kv:.5g}"  # else the check below could not tell 4 digits from 5
    assert row("objective per extra KV token")[-1] == f"{per_kv:.4g}"
    assert row("dual kv_memory")[-1] == f"{lp['duals']['kv_memory']:.4g}"
    assert row("dual iteration_time")[-1] == f"{lp['duals']['iteration_time']:.4g}"


def test_ode_table_rounds_the_queue_to_4_digits_and_cuts_a_skip_reason_at_60_characters(workload_file, capsys):
    from fluid.cli import render_text

    assert main(["fluid", str(workload_file), "--ode", "5", "--json"]) == 0
    report = _json(capsys)
    report["rate_scale"] = 1.0
    report["ode"]["wait"] = {"skipped": "x" * 59 + "YZ" + "w" * 20}  # characters 60 and 61 are Y and Z
    report["ode"]["fcfs"].update(final_queue_prompts=1.234567, final_memory_tokens=98765.4321)
    lines = render_text(report).splitlines()
    wait = next(ln for ln in lines if ln.split()[:1] == ["wait"])
    fcfs = next(ln for ln in lines if ln.split()[:1] == ["fcfs"]).split()
    assert wait.split()[1:] == ["skipped:", "x" * 59 + "Y"]
    assert fcfs[1] == "98765.4" and fcfs[3] == "1.235"  # memory to 6 significant digits, the queue to 4


def test_a_toolkit_error_without_its_own_code_exits_1(workload_file, capsys, monkeypatch):
    import fluid.cli
    from fluid.errors import FluidSchedError

    def fails(args):
        raise FluidSchedError("something of ours went wrong")

    monkeypatch.setattr(fluid.cli, "run", fails)
    assert main(["fluid", str(workload_file)]) == 1
    assert "something of ours went wrong" in capsys.readouterr().err


def test_table_columns_are_as_wide_as_their_longest_cell_or_header():
    from fluid.tables import format_table

    text = format_table(["h", "value"], [["long value", "1"], ["b", "12345"]])
    assert text.splitlines() == ["h           value", "----------  -----", "long value      1", "b           12345"]


def test_objective_per_kv_token_is_the_throughput_gained_per_extra_kv_token(tmp_path, capsys):
    # where memory binds (C = 20,000 < M* = 22,188), 10 more KV tokens raise the LP's throughput by
    # 10 × objective_per_kv_token: the dual of the memory row is priced in decode tokens/s per token
    def lp(c):
        path = tmp_path / f"c{c}.yaml"
        path.write_text(STABLE.replace("137000", str(c)))
        assert main(["fluid", str(path), "--json", "--lp"]) == 3  # over memory at the fluid point
        return _json(capsys)["lp"]

    lo, hi = lp(20_000), lp(20_010)
    assert "kv_memory" in lo["binding"]
    slope = (hi["throughput_tokens_per_s"] - lo["throughput_tokens_per_s"]) / 10
    assert slope == pytest.approx((lo["objective_per_kv_token"] + hi["objective_per_kv_token"]) / 2, rel=1e-3)
