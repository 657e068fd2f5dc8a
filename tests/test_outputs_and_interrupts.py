"""Outputs are whole or absent: atomic run folders, a reused folder loses its stale files, Ctrl-C
says what was kept and exits 130; run/calibrate as a new user meets them."""

from __future__ import annotations

import json

import pytest

from fluid.file_output import atomic_folder, finite_json
from runtime.gpu.cli_calibrate import fit_warning
from runtime.summary_checks import short_window_warning
from validation.cli import main

WORKLOAD = """\
name: tiny
kv_capacity_tokens: 20000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}
"""


@pytest.fixture
def workload(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text(WORKLOAD, encoding="utf-8")
    return str(path)


def test_reused_run_folder_drops_the_stale_policy(tmp_path, workload):
    out = tmp_path / "run"
    policy = tmp_path / "p.json"
    assert main(["solve", workload, "-o", str(policy)]) == 0
    assert main(["simulate", workload, "--policy", str(policy), "--requests", "50", "--out", str(out)]) == 0
    assert (out / "policy.json").is_file()
    assert main(["simulate", workload, "--scheduler", "fcfs", "--requests", "50", "--out", str(out)]) == 0
    assert not (out / "policy.json").exists()  # the fcfs run used no policy
    assert json.loads((out / "summary.json").read_text())["scheduler"] == "fcfs"
    assert not [p.name for p in tmp_path.iterdir() if ".partial-" in p.name or ".old-" in p.name]


def test_a_failure_while_writing_leaves_the_earlier_folder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text("{}", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_folder(out) as tmp:
            (tmp / "summary.json").write_text("{}", encoding="utf-8")
            raise RuntimeError("disk full")
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no temporary folder left


def test_ctrl_c_during_compare_exits_130_and_keeps_nothing_partial(tmp_path, workload, monkeypatch, capsys):
    import runtime.simrun as simrun

    calls = []
    real = simrun.run_simulation

    def interrupted(config, **kwargs):
        calls.append(config.scheduler)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(config, **kwargs)

    monkeypatch.setattr(simrun, "run_simulation", interrupted)
    out = tmp_path / "cmp"
    code = main(["compare", workload, "--schedulers", "fcfs,vllm-v1", "--requests", "50", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 130 and calls == ["fcfs", "vllm-v1"]
    assert "interrupted; nothing was written" in err and "Traceback" not in err
    assert not out.exists()


def test_ctrl_c_after_an_output_names_it(tmp_path, workload, monkeypatch, capsys):
    import runtime.cli_simulate as cli_simulate

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    out = tmp_path / "run"
    monkeypatch.setattr(cli_simulate, "format_table", interrupted)  # after the folder is written
    assert main(["simulate", workload, "--scheduler", "fcfs", "--requests", "50", "--out", str(out)]) == 130
    assert capsys.readouterr().err.strip() == f"fluidsched simulate: interrupted; kept {out}"
    assert (out / "summary.json").is_file()
    # the next command's report counts its own outputs only
    monkeypatch.setattr(cli_simulate, "run_simulation", interrupted, raising=False)
    import runtime.simrun as simrun

    monkeypatch.setattr(simrun, "run_simulation", interrupted)
    assert main(["simulate", workload, "--scheduler", "fcfs", "--requests", "50", "--out", str(tmp_path / "b")]) == 130
    assert "nothing was written" in capsys.readouterr().err


def test_summary_json_never_holds_nan_or_infinity(tmp_path, workload):
    out = tmp_path / "run"
    # a horizon before any request finishes: every latency statistic is undefined
    assert main(["simulate", workload, "--scheduler", "fcfs", "--requests", "50", "--horizon", "0.001", "--out", str(out)]) == 0
    text = (out / "summary.json").read_text()
    json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in summary.json"))
    assert finite_json({"a": [float("nan"), float("inf"), 1.0]}) == {"a": [None, None, 1.0]}


def test_finite_json_turns_numpy_values_into_plain_json_with_none_for_nan():
    import numpy as np

    # arrays and numpy scalars go through tolist(): plain lists, ints and floats, NaN and ±inf as None
    out = finite_json({"a": np.array([1.0, np.nan, np.inf]), "b": np.int64(3), "c": (np.float32(0.5),), "d": "text"})
    assert out == {"a": [1.0, None, None], "b": 3, "c": [0.5], "d": "text"}
    assert type(out["b"]) is int and type(out["c"][0]) is float
    assert json.dumps(out, allow_nan=False) == '{"a": [1.0, null, null], "b": 3, "c": [0.5], "d": "text"}'


def test_short_throughput_window_is_flagged():
    summary = {"window_start_s": 0.5, "window_stop_s": 1.0, "sim_end_s": 40.0, "measured_requests": 90,
               "decode_throughput_tokens_per_s": 1.7, "overall_decode_throughput_tokens_per_s": 1152.0}
    text = short_window_warning(summary)
    assert "covers 0.5 s of a 40 s run" in text and "1,152.0 decode tokens/s" in text
    # exactly a quarter of the run with 30 measured requests is enough
    assert short_window_warning({**summary, "window_start_s": 0.0, "window_stop_s": 10.0, "measured_requests": 30}) is None
    assert short_window_warning({**summary, "window_start_s": 0.0, "window_stop_s": 10.0, "measured_requests": 29}) is not None


def test_simulate_warns_when_every_request_arrives_at_once(tmp_path, capsys):
    path = tmp_path / "burst.yaml"
    path.write_text(WORKLOAD.replace("20.0", "5000.0"), encoding="utf-8")  # 100 arrivals within ~20 ms
    assert main(["simulate", str(path), "--scheduler", "fcfs", "--requests", "100"]) == 0
    assert "warning: the throughput window" in capsys.readouterr().err


def test_calibration_fit_warning_boundaries():
    good = {"linear3": {"mape": 0.25, "r2": 0.9}}
    assert fit_warning(good) is None
    assert "2267 %" in fit_warning({"linear3": {"mape": 22.67, "r2": 0.5}})
    assert fit_warning({"linear3": {"mape": 0.1, "r2": 0.89}}) is not None


def test_missing_gpu_packages_say_what_to_install(monkeypatch, workload, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "transformers" else real(name, *a))
    for argv in (["run", workload, "--scheduler", "fcfs", "--device", "cpu"], ["calibrate", "--device", "cpu"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "needs transformers" in err and 'pip install -e ".[gpu]"' in err and "Traceback" not in err


def test_solved_preset_runs_on_that_preset_despite_block_rounding(tmp_path, capsys):
    """default has C = 23,000 tokens, not a multiple of 16: the policy solved for it must run."""
    pytest.importorskip("transformers")
    policy = tmp_path / "p.json"
    workload = tmp_path / "w.yaml"
    workload.write_text(WORKLOAD.replace("20000", "23000"), encoding="utf-8")
    assert main(["solve", str(workload), "-o", str(policy)]) == 0
    out = tmp_path / "run"
    assert main(["run", str(workload), "--policy", str(policy), "--device", "cpu", "--model", "tiny-llama",
                 "--requests", "4", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["kv_capacity_tokens"] == 23000
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 4 and summary["kv_pool_bytes"] > 0


def test_an_overlapped_run_says_so_in_its_config_and_summary(tmp_path):
    pytest.importorskip("transformers")
    workload = tmp_path / "w.yaml"
    workload.write_text(WORKLOAD, encoding="utf-8")
    out = tmp_path / "run"
    assert main(["run", str(workload), "--scheduler", "vllm-v1", "--device", "cpu", "--model", "tiny-llama", "--requests", "6",
                 "--overlap-host", "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    summary = json.loads((out / "summary.json").read_text())
    steps = json.loads((out / "steps.json").read_text())
    assert config["overlap_host"] is True and summary["overlap_host"] is True and summary["completed"] == 6
    assert all({"hidden_host_s", "host_bound"} <= set(row) for row in steps)
    assert summary["host_bound_step_share"] == sum(row["host_bound"] for row in steps) / len(steps)


def test_calibrate_help_example_is_the_one_that_runs(capsys):
    """The CPU example in `calibrate --help` is the command this suite runs (tests/test_calibrate.py
    runs it at a smaller grid); here: the help shows it, and its flags parse."""
    from runtime.gpu.cli_calibrate import HELP_EXAMPLES
    from validation.cli import build_parser

    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    out = capsys.readouterr().out
    example = next(line for line in HELP_EXAMPLES.splitlines() if "--device cpu" in line)
    argv = example.split("(")[0].split()[1:]
    assert example.split("(")[0].strip() in out
    args = build_parser("calibrate").parse_args(argv)
    assert (args.device, args.model, args.grid_scale, args.out) == ("cpu", "tiny-llama", 0.05, "cal.json")


def test_atomic_folder_creates_missing_parents_and_reuses_existing_ones(tmp_path):
    target = tmp_path / "a" / "b" / "run"  # neither a nor b exists yet
    with atomic_folder(target) as tmp:
        (tmp / "x.txt").write_text("1")
    assert (target / "x.txt").read_text() == "1"
    sibling = tmp_path / "a" / "b" / "run2"  # the parent exists now
    with atomic_folder(sibling) as tmp:
        (tmp / "y.txt").write_text("2")
    assert (sibling / "y.txt").read_text() == "2"


def test_a_leftover_of_the_earlier_folder_that_cannot_be_removed_does_not_fail_the_write(tmp_path, monkeypatch):
    import os

    out = tmp_path / "run"
    out.mkdir()
    (out / "summary.json").write_text("{}", encoding="utf-8")  # an earlier run's folder
    (out / "stuck.txt").write_text("old", encoding="utf-8")
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):  # the earlier folder's file cannot be deleted (say, on a share)
        if os.fspath(path).endswith("stuck.txt"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with atomic_folder(out) as tmp:
        (tmp / "summary.json").write_text('{"new": 1}', encoding="utf-8")
    # the new folder is in place and nothing was raised: only the old copy's cleanup was incomplete
    assert sorted(p.name for p in out.iterdir()) == ["summary.json"]
    assert (out / "summary.json").read_text(encoding="utf-8") == '{"new": 1}'


def test_print_json_indents_by_two_and_ends_with_a_newline(capsys):
    from fluid.cli_json import print_json

    print_json({"a": [1], "b": None})
    assert capsys.readouterr().out == '{\n  "a": [\n    1\n  ],\n  "b": null\n}\n'


def test_print_json_refuses_nan_and_infinity_rather_than_printing_non_json():
    import numpy as np

    from fluid.cli_json import print_json

    for bad in (float("nan"), float("inf"), np.float64("-inf")):
        with pytest.raises(ValueError, match="Out of range float values are not JSON compliant"):
            print_json({"x": bad})
    print_json({"x": np.float64(1.5)})  # a finite numpy scalar is written as a number


def test_atomic_write_text_writes_into_an_existing_folder_and_creates_missing_ones(tmp_path):
    from fluid.file_output import atomic_write_text

    target = atomic_write_text(tmp_path / "a.json", "first")  # tmp_path exists already
    assert target == tmp_path / "a.json" and target.read_text() == "first"
    atomic_write_text(tmp_path / "a.json", "second")  # replaces, no temporary file left behind
    assert target.read_text() == "second" and sorted(p.name for p in tmp_path.iterdir()) == ["a.json"]
    deep = atomic_write_text(tmp_path / "x" / "y" / "b.txt", "deep")
    assert deep.read_text() == "deep"
