"""A fidelity run's live points rebuilt offline: each load's workload and WAIT policy as
`gpu_fidelity.py` made them, and a point simulated on its own arrivals with any batch-time model.

`gpu_fidelity.py` builds a load's workload from the calibration's linear3 at the run's simulated
capacity (`fidelity.json` → `sizing.capacity_tok_s`), solves WAIT on it with the run's slack and
draws the point's requests with seed 0: doing the same here gives the arrivals and the policy the
live run had, whatever model then simulates them (`accept_policy_mismatch`: the policy was solved
for the linear3 workload).
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import tempfile
from pathlib import Path


def rebuild_workloads(calibration: dict, calibration_name: str, fidelity: dict) -> dict:
    """{load: (workload, WAIT policy, policy document)} for every load of the run's points."""
    import gpu_loop_workload

    from fluid.workload_io import load_workload
    from runtime.cli_simulate import load_policy_arg
    from validation.cli import main as cli

    tmp = Path(tempfile.mkdtemp(prefix="fluidsched-fidelity-"))
    out = {}
    for load in sorted({p["load"] for p in fidelity["points"]}):
        wl, design = gpu_loop_workload.build(calibration, load=load, memory_use=0.75, capacity_tok_s=fidelity["sizing"]["capacity_tok_s"])
        wl_path, pol_path = tmp / f"wl-{load}.yaml", tmp / f"policy-{load}.json"
        wl_path.write_text(gpu_loop_workload.to_yaml(wl, design, calibration_name))
        with contextlib.redirect_stdout(io.StringIO()):
            if cli(["solve", str(wl_path), "--slack", str(fidelity["slack"]), "--service-rule", "cohort", "-o", str(pol_path)]) != 0:
                raise SystemExit(f"solve failed for load {load}")
        out[load] = (load_workload(str(wl_path)), *load_policy_arg(str(pol_path)))
    return out


def simulate_point(workloads: dict, fidelity: dict, scheduler: str, load: float, batch_time):
    """The summary of `scheduler` at `load` simulated with `batch_time` on the live point's arrivals."""
    from runtime.simrun import SimConfig, run_simulation

    w, pol, doc = workloads[load]
    pol = pol if scheduler == "wait" else None
    cfg = SimConfig(workload=dataclasses.replace(w, batch_time=batch_time), scheduler=scheduler, num_requests=fidelity["requests"], seed=0,
                    block_size=16, policy=pol, policy_document=doc if pol else None, accept_policy_mismatch=True)
    return run_simulation(cfg).summary
