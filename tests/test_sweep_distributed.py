"""The Dask backend of `fluidsched sweep`, on a local cluster: the same points, the same numbers
as the local process pool, and the address form of the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest

dd = pytest.importorskip("dask.distributed")

from paper_figures.results import read_table  # noqa: E402
from validation.experiment import load_experiment  # noqa: E402
from validation.runner import DaskBackend, LocalBackend, run_sweep  # noqa: E402

EXPERIMENT = Path(__file__).resolve().parent.parent / "validation" / "experiments" / "07-fcfs-counterexample.yaml"

# distributed's own start-up and shutdown may warn (ports, closing comms); they are not ours
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::ResourceWarning", "ignore::UserWarning")


def _numbers(out: Path) -> dict:
    return {r["point_id"]: (r["status"], r["restarts"], r["decode_throughput_tokens_per_s"], r["mean_latency_s"]) for r in read_table(out)}


def test_dask_local_cluster_runs_the_same_points_as_the_local_pool(tmp_path):
    experiment = load_experiment(EXPERIMENT, smoke=True)
    with dd.LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster, \
            dd.Client(cluster) as client:
        backend = DaskBackend(client=client)
        outcome = run_sweep(experiment, tmp_path / "dask", backend, quiet=True)
        backend.close()  # a borrowed client stays open
        assert client.status == "running"
    assert outcome.ran == 12 and not outcome.crashes
    local = run_sweep(experiment, tmp_path / "local", LocalBackend(1), quiet=True)
    assert local.ran == 12
    assert _numbers(tmp_path / "dask") == _numbers(tmp_path / "local")


def test_cli_dask_address_and_an_unreachable_one(tmp_path, capsys):
    from validation.cli import main

    with dd.LocalCluster(n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        assert main(["sweep", str(EXPERIMENT), "--out", str(tmp_path / "o"), "--smoke", "--quiet", "--dask", cluster.scheduler_address]) == 0
    assert "on dask" in capsys.readouterr().out
    assert len(read_table(tmp_path / "o")) == 12
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        assert main(["sweep", str(EXPERIMENT), "--out", str(tmp_path / "p"), "--smoke", "--quiet", "--dask", "tcp://127.0.0.1:9"]) == 2
    assert "cannot reach a Dask scheduler" in capsys.readouterr().err
