"""The machine's speed through a GPU run: nvidia-smi clock samples read back and summarised per
window, calibration rows stamped with their wall time and the host's speed, and the pass drift
told apart by the host's loop."""

from __future__ import annotations

import os
import stat
import time

import pytest

from runtime.gpu.calibrate import measure_grid, pass_drift
from runtime.gpu.clock_log import (
    FIELDS,
    GpuClockLog,
    by_pass_region,
    parse_samples,
    window_summary,
)


def _stamp(at: float) -> str:
    lt = time.localtime(at)
    return time.strftime("%Y/%m/%d %H:%M:%S", lt) + f".{round((at % 1) * 1000):03d}"


def test_samples_read_local_timestamps_hex_masks_and_skip_torn_lines():
    at = time.mktime((2026, 12, 3, 12, 0, 5, 0, 0, -1)) + 0.25
    text = (f"{_stamp(at)}, 1980, 3201, 512.30, 45, 0x0000000000000000\n"
            f"{_stamp(at + 0.2)}, [N/A], 3201, 498.00, 46, 0x0000000000000004\n"
            f"{_stamp(at + 0.4)}, 1755, 32")  # the log was being written: half a line
    got = parse_samples(text)
    assert len(got) == 2
    assert got[0]["at_s"] == pytest.approx(at, abs=1e-6) and got[1]["at_s"] == pytest.approx(at + 0.2, abs=1e-6)
    assert got[0]["clocks.sm"] == 1980.0 and got[0]["power.draw"] == 512.3 and got[0]["clocks_event_reasons.active"] == 0.0
    assert got[1]["clocks.sm"] is None and got[1]["clocks_event_reasons.active"] == 4.0
    assert parse_samples("not a time, 1, 2, 3, 4, 5") == []


def test_a_window_holds_the_samples_at_its_ends_and_no_other():
    samples = [{"at_s": t, "clocks.sm": sm, "clocks.mem": 3201.0, "power.draw": 500.0, "temperature.gpu": 45.0,
                "clocks_event_reasons.active": mask}
               for t, sm, mask in ((9.9, 1000.0, 0x4), (10.0, 1980.0, 0x0), (10.5, 1900.0, 0x1), (10.7, 1950.0, 0x2), (11.0, 1700.0, 0x4), (11.1, 900.0, 0x8))]
    w = window_summary(samples, 10.0, 11.0)
    assert w["samples"] == 4 and w["clocks.sm"] == 1925.0 and w["clocks.sm_min"] == 1700.0
    # idle (0x1) and the applications-clocks setting (0x2) are not slowdowns; the power cap (0x4) is
    assert w["held_down_share"] == 0.25 and w["reasons_share"] == {"0x0": 0.25, "0x1": 0.25, "0x2": 0.25, "0x4": 0.25}
    assert window_summary(samples, 12.0, 13.0) == {"samples": 0}


class _Timer:
    """A StepTimer's surface: times come from a table, the clock advances by them."""

    def __init__(self, times):
        self.times, self.last_host_s, self.last_graph = times, 1e-4, True

    def fits(self, composition):
        return composition != "too big"

    def time_s(self, composition, repeats=5):
        from fluid.batch_time import BatchShape

        return self.times[composition], BatchShape(new_tokens=1, kv_tokens=10, num_decodes=1, num_prefills=0)


def test_grid_rows_carry_their_start_time_and_the_host_probe_before_them():
    probes = iter([{"python_loop_1e5_s": x} for x in (0.003, 0.004, 0.006, 0.0025, 0.004, 0.003)])
    grid = [("decode 1", "a"), ("decode 2", "b"), ("prefill 9", "too big"), ("prefill 4", "c")]
    before = time.time()
    rows = measure_grid(_Timer({"a": 0.01, "b": 0.02, "c": 0.03}), grid, passes=2, probe=lambda: next(probes))
    assert [(r["label"], r["pass"]) for r in rows] == [("decode 1", 0), ("decode 2", 0), ("prefill 4", 0),
        ("decode 1", 1), ("decode 2", 1), ("prefill 4", 1)]
    assert [r["host_probe"]["python_loop_1e5_s"] for r in rows] == [0.003, 0.004, 0.006, 0.0025, 0.004, 0.003]
    assert before <= rows[0]["at_s"] <= rows[1]["at_s"] <= rows[-1]["at_s"] <= time.time()
    drift = pass_drift(rows)
    # decode: the loop ran 0.0025/0.003 and 0.004/0.004 of pass 0's time -> median 0.9167; prefill 0.003/0.006
    assert drift["host_loop_pass1_over_pass0_median_by_region"] == pytest.approx({"decode": (0.0025 / 0.003 + 1) / 2, "prefill": 0.5})
    assert "host_loop_pass1_over_pass0_median_by_region" not in pass_drift([{k: v for k, v in r.items() if k != "host_probe"} for r in rows])
    assert all("host_probe" not in r for r in measure_grid(_Timer({"a": 0.01}), grid[:1]))


def test_calibration_regions_gather_their_rows_windows_with_clocks_and_host_loop():
    rows = [{"label": lab, "pass": p, "at_s": t, "time_s": 0.01, "host_probe": {"python_loop_1e5_s": loop}}
            for lab, p, t, loop in (("decode 1", 0, 100.0, 0.003), ("mixed 1", 0, 101.0, 0.004), ("decode 2", 0, 102.0, 0.005),
                                    ("decode 1", 1, 103.0, 0.002))]
    rows.append({"label": "live-decode 7", "pass": 0, "time_s": 0.01})  # a recorded step: no wall time, no window
    samples = [{"at_s": t, "clocks.sm": sm} for t, sm in ((100.5, 1900.0), (101.0, 1500.0), (101.5, 1980.0), (102.5, 1800.0), (103.01, 1600.0),
                                                           (103.2, 1000.0))]
    got = by_pass_region(rows, samples)
    assert list(got) == ["pass 0 decode", "pass 0 mixed", "pass 1 decode"]
    # pass 0's decodes ran in [100, 101] and [102, 103]: the samples at 100.5, 101.0 (the boundary, in both windows) and 102.5
    dec = got["pass 0 decode"]
    assert dec["points"] == 2 and dec["seconds"] == 2.0 and dec["gpu_clocks"]["samples"] == 3
    assert dec["gpu_clocks"]["clocks.sm"] == 1800.0 and dec["gpu_clocks"]["clocks.sm_min"] == 1500.0 and dec["python_loop_1e5_s_median"] == 0.004
    assert got["pass 0 mixed"]["gpu_clocks"]["samples"] == 2 and got["pass 0 mixed"]["gpu_clocks"]["clocks.sm"] == 1740.0
    last = got["pass 1 decode"]  # the last row runs for 8 times its step: [103, 103.08]
    assert last["seconds"] == pytest.approx(0.08) and last["gpu_clocks"]["samples"] == 1 and last["gpu_clocks"]["clocks.sm"] == 1600.0
    assert by_pass_region([{"label": "decode 1", "pass": 0, "time_s": 0.01}], samples) == {}


FAKE_SMI = """#!/bin/sh
# a stand-in for nvidia-smi: refuses the newer reasons field when FAKE_OLD_DRIVER is set; with -lms
# writes a sample line to the -f file every period until stopped
case "$*" in *clocks_event_reasons*) [ -n "$FAKE_OLD_DRIVER" ] && exit 6;; esac
file=""; loop=""
while [ $# -gt 0 ]; do case "$1" in -f) file="$2"; shift;; -lms) loop="$2"; shift;; esac; shift; done
line() { printf '%s.000, 1980, 3201, 500.00, 45, 0x0000000000000000\\n' "$(date '+%Y/%m/%d %H:%M:%S')"; }
if [ -z "$loop" ]; then line; exit 0; fi
while true; do line >> "$file"; sleep 0.05; done
"""


@pytest.mark.parametrize("old_driver", [False, True])
def test_the_log_samples_while_open_and_falls_back_to_the_older_field_name(tmp_path, monkeypatch, old_driver):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_SMI)
    smi.chmod(smi.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    if old_driver:
        monkeypatch.setenv("FAKE_OLD_DRIVER", "1")
    log = GpuClockLog(tmp_path / "clocks.csv", period_ms=50)
    t0 = time.time()
    with log:
        deadline = time.time() + 10
        while len(log.samples()) < 3 and time.time() < deadline:
            time.sleep(0.05)
    assert log.fields == FIELDS  # the older name is read back under the newer one
    got = log.samples()
    assert len(got) >= 3 and all(s["clocks.sm"] == 1980.0 and s["clocks_event_reasons.active"] == 0.0 for s in got)
    assert log.window(t0 - 1, time.time() + 1)["samples"] == len(got)
    time.sleep(0.2)
    assert len(log.samples()) == len(got)  # stopped: nothing more is written


def test_without_nvidia_smi_the_log_is_empty(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    log = GpuClockLog(tmp_path / "clocks.csv")
    assert log.start() is False and log.samples() == [] and log.window(0, 1e12) == {"samples": 0}
    log.stop()


def test_shuffled_passes_each_take_their_own_order_and_the_same_seed_the_same_one():
    grid = [(f"decode {k}", f"c{k}") for k in range(12)]
    timer = _Timer({f"c{k}": 0.001 * (k + 1) for k in range(12)})
    plain = measure_grid(timer, grid, passes=2)
    assert [r["label"] for r in plain] == [lab for lab, _ in grid] * 2
    rows = measure_grid(timer, grid, passes=3, order_seed=0)
    orders = [[r["label"] for r in rows if r["pass"] == p] for p in range(3)]
    assert all(sorted(o) == sorted(lab for lab, _ in grid) for o in orders)  # every point once a pass
    assert len({tuple(o) for o in orders}) == 3 and orders[0] != [lab for lab, _ in grid]
    assert [r["label"] for r in measure_grid(timer, grid, passes=3, order_seed=0)] == [r["label"] for r in rows]
    assert [r["label"] for r in measure_grid(timer, grid, passes=1, order_seed=1)] != orders[0]


def test_a_point_keeps_its_median_over_three_passes_and_recorded_steps_stay_as_they_are():
    from runtime.gpu.calibrate import aggregate_passes

    shape = {"new_tokens": 1, "kv_tokens": 10, "num_decodes": 1, "num_prefills": 0, "prefill_attention_pairs": 0}
    rows = [{"label": lab, "pass": p, "time_s": t, "host_s": h, "at_s": 1.0, "host_probe": {}, **shape}
            for lab, p, t, h in (("decode 8", 2, 0.0100, 3e-4), ("decode 8", 0, 0.0105, 1e-4), ("mixed 1", 0, 0.020, 2e-4),
                                 ("decode 8", 1, 0.0130, 2e-4), ("mixed 1", 1, 0.021, 2e-4), ("mixed 1", 2, 0.019, None))]
    rows.append({"label": "live-decode run#3", "pass": 0, "time_s": 0.03, **shape})
    got = aggregate_passes(rows)
    assert [r["label"] for r in got] == ["decode 8", "mixed 1", "live-decode run#3"]
    dec, mix, live = got
    assert dec["time_s"] == 0.0105 and dec["pass_times_s"] == [0.0105, 0.0130, 0.0100] and dec["host_s"] == 2e-4  # the slow pass 1 dropped
    assert dec["pass"] == "median" and "at_s" not in dec and "host_probe" not in dec and dec["num_decodes"] == 1
    assert mix["time_s"] == 0.020 and mix["host_s"] == 2e-4  # a pass without a host time: the first row's kept
    assert live is rows[-1]


def test_with_three_passes_the_drift_says_which_pass_was_off():
    rows = [{"label": lab, "pass": p, "time_s": t} for lab, ts in (("decode 8", (10.0, 10.5, 10.0)), ("decode 16", (20.0, 21.0, 20.2)),
                                                                   ("mixed 1", (5.0, 5.0, 5.1))) for p, t in enumerate(ts)]
    d = pass_drift(rows)
    by_pass = d["pass_over_point_median_by_region"]
    assert by_pass["1"]["decode"] == pytest.approx((1.05 + 21.0 / 20.2) / 2) and by_pass["0"]["decode"] == pytest.approx((1.0 + 20.0 / 20.2) / 2)
    assert by_pass["2"]["mixed"] == pytest.approx(5.1 / 5.0) and by_pass["0"]["mixed"] == 1.0
    assert "pass_over_point_median_by_region" not in pass_drift([r for r in rows if r["pass"] < 2])
