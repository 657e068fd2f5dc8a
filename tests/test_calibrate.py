"""`fluidsched calibrate` on CPU with a tiny model: grid, fits, output file."""

from __future__ import annotations

import json
import statistics

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from fluid.batch_time import batch_time_from_dict  # noqa: E402
from runtime.gpu.calibration_grid import calibration_grid  # noqa: E402
from validation.cli import main  # noqa: E402


def test_grid_covers_three_regimes():
    labels = [label for label, _ in calibration_grid()]
    assert any(x.startswith("prefill") for x in labels)
    assert any(x.startswith("decode") for x in labels)
    assert any(x.startswith("mixed") for x in labels)


def test_calibrate_cpu_writes_fits(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "cal.json"
    code = main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--grid-scale", "0.02", "--repeats", "1", "--kv-tokens", "2048",
                 "--passes", "2", "--pass-order", "grid", "--aggregate", "rows", "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert set(data["fits"]) == {"affine", "linear3", "stepwise"}
    for kind in ("affine", "linear3"):
        fit = data["fits"][kind]
        assert 0 <= fit["mape"] and fit["r2"] <= 1 and fit["num_rows"] == len(data["table"])
    passes = [[r["label"] for r in data["table"] if r["pass"] == k] for k in (0, 1)]
    assert passes[0] == passes[1] and len(passes[0]) * 2 == len(data["table"])  # two passes over every point
    model = batch_time_from_dict(data["batch_time"], source=str(out))  # readable as a workload's batch_time
    assert model.kind == "linear3" and model.linear_coefficients()[0] > 0
    rich = batch_time_from_dict(data["batch_time_stepwise"], source=str(out))
    assert rich.kind == "stepwise" and rich.linear_coefficients() == model.linear_coefficients()
    assert data["heldout_step_mape"] == data["fits"]["stepwise"]["heldout_mape"] >= 0
    assert data["sustain"] == {"seconds_per_point": 0.0, "steps": 0}  # on cpu no point is sustained by default
    assert data["host"]["cpu_cores"] >= 1 and data["host"]["python_loop_1e6_s"] > 0
    assert all(row["time_s"] > 0 for row in data["table"])
    # the passes compared point by point, in the file; a disagreement beyond 2 % is a warning on stderr
    assert data["pass_drift"]["points"] == len(passes[0])
    t = {(r["label"], r["pass"]): r["time_s"] for r in data["table"]}
    assert data["pass_drift"]["pass1_over_pass0_median"] == pytest.approx(statistics.median(t[(x, 1)] / t[(x, 0)] for x in passes[0]), rel=1e-12)
    assert ("pass_drift_warning" in data) == ("the passes disagree" in capsys.readouterr().err)


def test_calibrate_bad_device(tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert main(["calibrate", "--device", "cuda", "--model", "tiny-llama", "--out", str(tmp_path / "c.json")]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_calibrate_three_shuffled_passes_fits_each_points_median(tmp_path, capsys):
    torch.set_num_threads(1)
    out = tmp_path / "cal.json"
    # the defaults: 3 passes, shuffled, each point's median
    code = main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--grid-scale", "0.02", "--repeats", "1", "--kv-tokens", "2048",
                 "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    assert (data["passes"], data["pass_order"], data["pass_aggregate"]) == (3, "shuffled", "median")
    orders = [[r["label"] for r in data["table"] if r["pass"] == k] for k in range(3)]
    assert sorted(orders[0]) == sorted(orders[1]) == sorted(orders[2]) and orders[0] != orders[1]
    fit_table = data["fit_table"]
    # one row per label (at this grid scale some contexts round to the same label: the same step)
    assert sorted(r["label"] for r in fit_table) == sorted(set(orders[0]))
    for r in fit_table:
        times = [x["time_s"] for x in sorted((x for x in data["table"] if x["label"] == r["label"]), key=lambda x: x["pass"])]
        assert r["pass_times_s"] == times and r["time_s"] == statistics.median(times)
    assert data["fits"]["stepwise"]["num_rows"] == len(fit_table) and data["fits"]["linear3"]["num_rows"] == len(fit_table)
    assert data["heldout_step_mape"] == data["fits"]["stepwise"]["heldout_mape"] and data["heldout_step_mape_by_row"] >= 0
    assert "fitted on median; fitted on each pass's row:" in capsys.readouterr().out


def test_calibrate_median_of_one_pass_is_refused(tmp_path, capsys):
    assert main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--passes", "1", "--aggregate", "median",
                 "--out", str(tmp_path / "c.json")]) == 2
    assert "--aggregate median takes the median over passes: give --passes 2 or more" in capsys.readouterr().err
    assert not (tmp_path / "c.json").exists()


def test_one_pass_fits_its_rows_without_being_told(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--grid-scale", "0.02", "--repeats", "1", "--kv-tokens", "2048",
                 "--passes", "1", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert (data["passes"], data["pass_aggregate"]) == (1, "rows") and "fit_table" not in data and data["pass_drift"] is None
    assert data["heldout_step_mape_by_row"] == data["heldout_step_mape"]


def test_calibrate_sustains_each_grid_point_and_says_so(tmp_path):
    torch.set_num_threads(1)
    out = tmp_path / "cal.json"
    code = main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--grid-scale", "0.02", "--repeats", "1", "--kv-tokens", "2048",
                 "--passes", "1", "--sustain-s", "0.002", "--quiet", "--out", str(out)])
    assert code == 0
    data = json.loads(out.read_text())
    # every point timed once ran at least one untimed step first (a CPU tiny-model step outlasts 2 ms or not: ≥ 1 either way)
    assert data["sustain"]["seconds_per_point"] == 0.002 and data["sustain"]["steps"] >= len(data["table"])


@pytest.mark.parametrize("bad", ["-0.1", "nan", "inf"])
def test_calibrate_refuses_a_bad_sustain_time(tmp_path, capsys, bad):
    out = tmp_path / "cal.json"
    assert main(["calibrate", "--device", "cpu", "--model", "tiny-llama", "--sustain-s", bad, "--out", str(out)]) == 2
    assert "--sustain-s must be a finite number of seconds ≥ 0" in capsys.readouterr().err and not out.exists()
