"""Which request is preempted: the newest admitted (LIFO), for every policy that preempts.

vLLM v0/v1, Sarathi-Serve, FCFS (one victim), RAD, SLAI and WAIT have their own tests in their
files; these cover the cases where more than one request goes, and where the newest is a prompt
still prefilling.
"""

from __future__ import annotations

import pytest

from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers import make_scheduler
from sim_helpers import run_step


@pytest.mark.parametrize("name", ["vllm-v1", "fcfs", "sarathi"])
def test_victims_go_newest_first_until_the_asking_request_is_itself_the_newest(name):
    # C = 8 tokens: 0 holds 6, 1 and 2 one each. At the decode step 0 needs a token: 2 (newest)
    # goes; then 1 needs a token and is itself the newest left, so it goes too.
    knobs = {"watermark": 0.0} if name == "sarathi" else {}
    s = make_scheduler(name, KVBlockManager(8, block_size=1), **knobs)
    s.add_request(Request(0, 0.0, prompt_tokens=6, output_tokens=2))
    s.add_request(Request(1, 0.0, prompt_tokens=1, output_tokens=3))
    s.add_request(Request(2, 0.0, prompt_tokens=1, output_tokens=3))
    run_step(s, 0.0)
    assert s.kv.free_blocks == 0
    batch = s.schedule(1.0)
    assert [r.request_id for r in batch.evicted] == [2, 1]
    assert [w.request.request_id for w in batch.items if not w.is_prefill] == [0]
    # restarts go to the front of the queue, the oldest first: a policy that admits in the same
    # step (FCFS, Sarathi-Serve; not vLLM v1) takes 1 back first
    readmitted = [w.request.request_id for w in batch.items if w.is_prefill]
    assert readmitted in ([], [1])
    assert [r.request_id for r in s.waiting] == [1, 2][len(readmitted):]


def test_rad_preempts_the_prompt_being_prefilled_before_any_decode():
    # the prompt being prefilled was admitted after every decoding request: it is the newest.
    # C = 12: 0 decodes, 1 has a first chunk of 4 of its 8 tokens cached.
    s = make_scheduler("rad", KVBlockManager(12, block_size=1), b_col=2, tile_tokens=4)
    a, b = Request(0, 0.0, 4, 6), Request(1, 0.0, 8, 3)
    s.add_request(a)
    run_step(s, 0.0)  # prefill of 0 (one tile)
    s.add_request(b)
    run_step(s, 1.0)  # 1 decoding < b_col: a tile of 1
    assert s.prefilling is b and b.cached_tokens == 4
    s.b_col = 1  # force decode mode: 0 grows from 4 to 8 tokens, filling C; then it needs a block
    for t in range(2, 6):
        run_step(s, float(t))
    assert s.kv.free_blocks == 0 and a.cached_tokens == 8
    batch = s.schedule(6.0)
    assert [r.request_id for r in batch.evicted] == [1]
    assert s.prefilling is None and s.waiting[0] is b
    assert [(w.request.request_id, w.is_prefill) for w in batch.items] == [(0, False)]
