"""The capped rule re-prefills what `Request.evict` asks for: l + s + 1 tokens after a recompute.

Found by serving the capped policies inside vLLM (tests/test_vllm_plugin_harness.py): vLLM
re-prefills a preempted request's prompt and every token it sampled, and so does the project's
request model; a capped scheduler that sized the chunk as l + s left the request one token short
and thrashed (evicting the same request over and over) once memory bound.
"""

from __future__ import annotations

from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeClass, RuntimePolicy
from runtime.request import Request
from runtime.schedulers import make_scheduler


def test_an_evicted_request_re_prefills_its_prompt_and_sampled_tokens_then_finishes():
    policy = RuntimePolicy("wait", "capped", classes=(RuntimeClass("a", 4, 3, 1.0),))  # cap 4
    # the authors' rule (no look-ahead, which would defer r1 and never evict)
    s = make_scheduler("wait-capped", KVBlockManager(9, 1), policy=policy, look_ahead=False)
    r0, r1 = Request(0, 0.0, 4, 3, "a"), Request(1, 0.0, 4, 3, "a")
    s.add_request(r0)
    s.add_request(r1)
    restarted_with = None
    for step in range(30):
        batch = s.schedule(float(step))
        for w in batch.items:
            if w.request is r1 and r1.restarts and restarted_with is None:
                restarted_with = (w.num_new_tokens, r1.decode_steps_done)
        s.complete_step(batch, float(step), step + 1.0)
        if not s.has_unfinished():
            break
    assert r1.restarts == 1 and s.stats["evictions"] == 1
    tokens, decoded = restarted_with
    assert tokens == 4 + decoded + 1  # l + s + 1, in one chunk (no chunking)
    assert r0.completion_s is not None and r1.completion_s is not None
    assert len(r1.token_times_s) == 3 + 1  # the prefill's token and one per decode stage, none twice
    assert step < 20
