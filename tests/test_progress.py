"""Progress bars: quiet off a terminal or with --quiet; on a terminal they count finished requests."""

from __future__ import annotations

import io

import runtime.progress as progress_mod
from runtime.progress import RequestProgress, iterate, progress_enabled
from validation.cli import main

WORKLOAD = """\
name: tiny
kv_capacity_tokens: 20000
batch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 1.0e-6}
types:
  - {name: short, prefill: 20, decode: 10, rate_per_s: 20.0}
"""


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_enabled_only_on_a_terminal_without_quiet():
    assert progress_enabled(False, _Terminal()) is True
    assert progress_enabled(True, _Terminal()) is False
    assert progress_enabled(False, io.StringIO()) is False


def test_watched_scheduler_counts_every_finished_request_once(tmp_path, monkeypatch):
    from fluid.workload_io import load_workload
    from runtime.simrun import SimConfig, run_simulation

    (tmp_path / "w.yaml").write_text(WORKLOAD, encoding="utf-8")
    config = SimConfig(load_workload(str(tmp_path / "w.yaml")), "vllm-v1", num_requests=123)
    monkeypatch.setattr(progress_mod, "DELAY_S", 0.0)
    stream = _Terminal()
    with RequestProgress(123, "vllm-v1", enabled=True, stream=stream) as bar:
        output = run_simulation(config, progress=bar)
    assert bar.done == output.summary.completed == 123
    assert "vllm-v1" in stream.getvalue()
    # the same run without a bar gives the same numbers
    plain = run_simulation(config)
    assert plain.summary.decode_throughput_tokens_per_s == output.summary.decode_throughput_tokens_per_s


def test_disabled_bar_returns_the_scheduler_itself():
    sentinel = object()
    assert RequestProgress(5, "x", enabled=False).watch(sentinel) is sentinel
    assert iterate([1, 2], "x", enabled=False) == [1, 2]


def test_grid_iteration_with_a_bar_yields_every_point(monkeypatch):
    monkeypatch.setattr(progress_mod, "DELAY_S", 0.0)
    stream = _Terminal()
    assert list(iterate(["a", "b", "c"], "grid", enabled=True, stream=stream)) == ["a", "b", "c"]
    assert "grid" in stream.getvalue()


def test_cli_prints_no_bar_when_not_a_terminal(tmp_path, capsys):
    (tmp_path / "w.yaml").write_text(WORKLOAD, encoding="utf-8")
    assert main(["simulate", str(tmp_path / "w.yaml"), "--scheduler", "fcfs", "--requests", "200"]) == 0
    assert "req/s" not in capsys.readouterr().err and "it/s" not in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "w.yaml"), "--schedulers", "fcfs,vllm-v1", "--requests", "200", "--quiet"]) == 0
