"""`runtime.replay`: a recorded run's clock into the simulator rebuilds the run, step for step."""

from __future__ import annotations

import pytest
from sim_helpers import small_workload

from fluid.errors import InputError
from runtime.arrivals import make_requests
from runtime.kv_blocks import KVBlockManager
from runtime.replay import replay
from runtime.schedulers import make_scheduler
from runtime.sim import ServerLoop, SimulatedDevice, run_server

EVICTIONS = 7
WORKLOAD = small_workload([(20, 10), (12, 6)], [300, 300], capacity_tokens=128, d0_s=0.002, d1_s=1e-5)


def _rows(res) -> list[dict]:
    """A run's steps as `EngineResult.step_rows` writes them (what a live step log holds)."""
    log = res.steps
    out = []
    for k in range(res.num_steps):
        s = log.record(k)
        out.append({"start_s": s.start_s, "measured_s": s.end_s - s.start_s, "new_tokens": s.shape.new_tokens, "kv_tokens": s.shape.kv_tokens,
                    "num_decodes": s.shape.num_decodes, "num_prefills": s.shape.num_prefills,
                    "prefill_attention_pairs": s.shape.prefill_attention_pairs, "kv_used_tokens": s.kv_used_tokens, "num_evicted": s.num_evicted})
    return out


class _HostGapDevice(SimulatedDevice):
    """The model's step times plus 0.3 ms of host time after every step, as a live run has."""

    def execute(self, loop, batch, start_s):
        end_s = super().execute(loop, batch, start_s)
        self._now_s = end_s + 3e-4
        return end_s


def _recorded():
    reqs = make_requests(WORKLOAD, 30, 3)
    sched = make_scheduler("vllm-v1", KVBlockManager(128, 4), max_num_batched_tokens=32)
    return reqs, run_server(ServerLoop(sched), reqs, _HostGapDevice(WORKLOAD.batch_time))


def test_replay_rebuilds_every_step_and_eviction():
    reqs, res = _recorded()
    rows = _rows(res)
    # the recording's clock has host time between steps: the replay must follow it, not the step ends
    assert sum(res.steps.num_evicted) == EVICTIONS
    assert all(rows[k + 1]["start_s"] >= rows[k]["start_s"] + rows[k]["measured_s"] + 3e-4 - 1e-12 for k in range(len(rows) - 1))
    again = make_requests(WORKLOAD, 30, 3)
    rep = replay(make_scheduler("vllm-v1", KVBlockManager(128, 4), max_num_batched_tokens=32), again, rows)
    assert rep.identical and rep.first_difference is None and rep.result.num_steps == len(rows)
    assert [(r.request_id, r.eviction_times_s, r.token_times_s) for r in again] == [(r.request_id, r.eviction_times_s, r.token_times_s) for r in reqs]


def test_replay_names_the_first_step_where_memory_differs():
    _, res = _recorded()
    rows = _rows(res)
    # the same scheduler on blocks of 8: the first prompt (12 tokens) holds 16 slots instead of 12
    rep = replay(make_scheduler("vllm-v1", KVBlockManager(128, 8), max_num_batched_tokens=32), make_requests(WORKLOAD, 30, 3), rows)
    assert not rep.identical
    assert rows[0]["kv_used_tokens"] == 12
    assert rep.first_difference == 0 and rep.difference == {"kv_used_tokens": (12, 16)}


def test_replay_rejects_rows_without_times():
    _, res = _recorded()
    rows = _rows(res)
    del rows[3]["measured_s"]
    with pytest.raises(InputError, match="recorded step 3 lacks"):
        replay(make_scheduler("vllm-v1", KVBlockManager(128, 4)), make_requests(WORKLOAD, 30, 3), rows)
