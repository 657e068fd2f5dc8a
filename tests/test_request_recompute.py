"""The recompute convention (docs/baselines.md, "Recompute"): what an evicted request prefills
again, which token its prefill samples, and the paper's reading kept for FCFS."""

from __future__ import annotations

import pytest

from runtime.request import Request


def _decoded(prompt: int, output: int, stages: int) -> Request:
    """A request prefilled at t = 1 and past `stages` decode stages (t = 2, 3, ...)."""
    r = Request(0, 0.0, prompt, output)
    r.advance(prompt, 1.0)
    for s in range(stages):
        r.advance(1, 2.0 + s)
    return r


def test_an_evicted_request_prefills_everything_it_knows_and_that_prefill_samples_the_next_token():
    r = _decoded(prompt=10, output=5, stages=2)  # 10 + 2 cached, 3 tokens out
    r.evict()
    assert (r.cached_tokens, r.prefill_target_tokens, r.restarts) == (0, 13, 1)
    assert r.in_prefill and r.prefill_remaining == 13
    assert r.advance(8, 10.0) is False  # a middle chunk samples nothing
    assert len(r.token_times_s) == 3 and r.decode_steps_done == 2
    assert r.advance(5, 11.0) is False  # the last chunk samples decode stage 3's token
    assert (r.decode_steps_done, r.token_times_s[-1], r.cached_tokens, r.in_prefill) == (3, 11.0, 13, False)
    assert r.advance(1, 12.0) is False  # and decoding resumes at stage 4, holding l + 4
    assert (r.decode_steps_done, r.cached_tokens) == (4, 14)


def test_an_eviction_before_the_last_stage_is_completed_by_its_recompute():
    r = _decoded(prompt=10, output=5, stages=4)  # one stage left
    r.evict()
    assert r.prefill_target_tokens == 15  # l + l': the most a recompute ever prefills
    assert r.advance(15, 20.0) is True
    assert r.completion_s == 20.0 and r.decode_steps_done == 5 and len(r.token_times_s) == 6


def test_an_eviction_in_the_middle_of_the_first_prefill_prefills_the_prompt_again():
    r = Request(0, 0.0, 10, 5)
    r.advance(4, 1.0)
    r.evict()
    assert (r.prefill_target_tokens, r.token_times_s) == (10, [])
    r.advance(10, 2.0)
    assert (r.token_times_s, r.decode_steps_done) == ([2.0], 0)  # the first token, no decode stage


def test_the_papers_reading_re_prefills_l_plus_s_and_decodes_again():
    r = _decoded(prompt=10, output=5, stages=2)
    r.evict(paper=True)
    assert r.prefill_target_tokens == 12
    assert r.advance(12, 10.0) is False
    assert (r.decode_steps_done, len(r.token_times_s)) == (2, 3)  # nothing sampled again
    r.advance(1, 11.0)
    assert (r.decode_steps_done, r.cached_tokens, r.token_times_s[-1]) == (3, 13, 11.0)


def test_a_chunk_past_the_recompute_is_refused():
    r = _decoded(prompt=10, output=5, stages=1)
    r.evict()
    with pytest.raises(RuntimeError, match="exceeds the 12 prefill tokens left"):
        r.advance(13, 5.0)
