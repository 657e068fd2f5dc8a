"""Nested WAIT (arXiv 2504.11320, §Nested WAIT): segment gating, entry queues, drain, per-class
instances, and that it never reads output lengths."""

from __future__ import annotations

import math
import sys

import pytest

from fluid.batch_time import AffineBatchTime
from runtime.kv_blocks import KVBlockManager
from runtime.policy_file import RuntimeInstance, RuntimePolicy, RuntimeSegment
from runtime.request import Request
from runtime.schedulers import make_scheduler
from runtime.sim import simulate


def _policy(*segments, rule="cohort", max_wait_s=math.inf, instances=()):
    return RuntimePolicy(
        "nested_wait", rule, max_wait_s, segments=tuple(RuntimeSegment(*s) for s in segments), instances=instances
    )


def _nested(policy, capacity=10_000, block=1, **knobs):
    return make_scheduler("nested-wait", KVBlockManager(capacity, block), policy=policy, **knobs)


def _step(s, now_s):
    """One step; the sorted stages it ran (0 = prefill)."""
    batch = s.schedule(now_s)
    stages = sorted(0 if w.is_prefill else w.request.decode_steps_done + 1 for w in batch.items)
    s.complete_step(batch, now_s, now_s + 1.0)
    return stages


def _feed(s, first_id, count, prompt=4, output=8):
    for i in range(first_id, first_id + count):
        s.add_request(Request(i, 0.0, prompt, output))


def test_segment_two_runs_only_once_its_entry_holds_its_threshold():
    # segment 1: stages 0..2 (n=3); segment 2: stages 3..8 (n=3). Each cohort of 3 has one prompt
    # that ends in segment 1, so only 2 per step reach segment 2's entry.
    s = _nested(_policy((0, 2, 3), (3, 8, 3)))
    runs = []
    for t in range(6):
        for i in range(3):
            s.add_request(Request(3 * t + i, 0.0, 4, 2 if i == 0 else 8))
        runs.append(_step(s, float(t)))
    assert runs[0] == [0, 0, 0]
    assert runs[2] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # t=3: 2 prompts wait at segment 2's entry (stage 3) < 3: segment 2 is not served
    assert runs[3] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    # t=4: 4 wait at the entry ≥ 3 (cache kept): both segments serve, stage 3 takes only 3
    assert runs[4] == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    # t=5: the one left over plus 2 new make 3 at the entry; 3 move on to stage 4
    assert runs[5].count(3) == 3 and runs[5].count(4) == 3
    assert len(s.groups[0].stages[3]) == 2  # the 2 that reached the entry at t=5 wait there


def test_segment_one_gates_everything():
    s = _nested(_policy((0, 2, 2), (3, 8, 1)))
    _feed(s, 0, 2)
    for t in range(4):
        _step(s, float(t))  # the cohort prefills, then waits: nobody at segment 1's entry
    assert s.schedule(4.0).items == []
    assert s.kv.used_tokens == 8  # both keep their caches
    s.on_arrivals_ended()
    assert _step(s, 5.0) == [1, 1]


def test_drain_timer_covers_stranded_later_segments():
    s = _nested(_policy((0, 1, 2), (2, 8, 2), max_wait_s=0.5))
    _feed(s, 0, 2)
    _step(s, 0.0)  # prefill; then nobody waits, so the cohort is stranded at stage 1
    assert s.schedule(1.0).items == []
    assert s.next_wakeup_s() == pytest.approx(1.5)  # last token at 1.0 + 0.5
    assert _step(s, 1.5) == [1, 1]


def test_continuous_rule_admits_cohorts_and_runs_every_decode():
    s = _nested(_policy((0, 2, 2), (3, 8, 1), rule="continuous"))
    _feed(s, 0, 3)
    assert _step(s, 0.0) == [0, 0]
    assert _step(s, 1.0) == [1, 1]  # one waits (< 2): no admission, decodes run
    _feed(s, 3, 1)
    assert _step(s, 2.0) == [0, 0, 2, 2]


def test_instances_route_by_type_then_by_nearest_prefill():
    inst = (
        RuntimeInstance(10, ("short",), (RuntimeSegment(0, 4, 2),)),
        RuntimeInstance(100, ("long",), (RuntimeSegment(0, 4, 1),)),
    )
    s = _nested(_policy((0, 4, 2), instances=inst))
    assert s._group_for(Request(0, 0.0, 90, 3, "short")) is s.groups[0]
    assert s._group_for(Request(1, 0.0, 12, 3, "other")) is s.groups[0]
    assert s._group_for(Request(2, 0.0, 70, 3)) is s.groups[1]
    s.add_request(Request(3, 0.0, 100, 3, "long"))
    assert len(s.schedule(0.0).items) == 1  # the long instance's threshold is 1


_POLICY_FILES = ("nested_wait.py", "threshold_base.py", "cohorts.py", "fits.py")


class _SealedOutput(Request):
    """A request whose output length Nested WAIT's own modules may not read (the executor may)."""

    @property
    def output_tokens(self):
        caller = sys._getframe(1).f_code
        if caller.co_filename.endswith(_POLICY_FILES):
            raise AssertionError(f"{caller.co_filename}:{caller.co_name} read output_tokens")
        return self.__dict__["_sealed"]

    @output_tokens.setter
    def output_tokens(self, value):
        self.__dict__["_sealed"] = value


@pytest.mark.parametrize("rule", ["cohort", "continuous"])
def test_nested_wait_never_reads_output_lengths(rule):
    reqs = [_SealedOutput(i, 0.05 * i, 6, (3, 9, 20)[i % 3]) for i in range(60)]
    s = _nested(_policy((0, 3, 3), (4, 9, 2), (10, 20, 1), rule=rule, max_wait_s=0.3), capacity=200, block=4)
    simulate(s, reqs, AffineBatchTime(0.02, 1e-4))
    assert all(r.finished for r in reqs)
    assert [r.decode_steps_done for r in reqs] == [(3, 9, 20)[i % 3] for i in range(60)]


def test_sealed_request_trap_does_fire():
    code = compile("r.output_tokens", "/x/runtime/schedulers/nested_wait.py", "eval")
    with pytest.raises(AssertionError, match="read output_tokens"):
        eval(code, {"r": _SealedOutput(0, 0.0, 1, 2)})


def test_outputs_past_the_last_breakpoint_stay_in_the_last_segment():
    reqs = [Request(i, 0.0, 3, 30) for i in range(4)]
    s = _nested(_policy((0, 2, 2), (3, 5, 2)))
    simulate(s, reqs, AffineBatchTime(0.01, 0.0))
    assert all(r.finished and r.decode_steps_done == 30 for r in reqs)


def test_tight_memory_never_overflows():
    reqs = [Request(i, 0.01 * i, 8, 5 + (i * 7) % 30) for i in range(120)]
    s = _nested(_policy((0, 10, 4), (11, 40, 2)), capacity=160, block=16)
    result = simulate(s, reqs, AffineBatchTime(0.01, 1e-5), audit=True)
    assert result.peak_kv_tokens <= 160
    assert all(r.finished for r in reqs)
    assert s.stats["admissions_deferred"] + s.stats["decodes_paused"] > 0  # memory did bind


def test_a_prompt_halfway_between_two_instances_goes_to_the_shorter_prefill():
    inst = (
        RuntimeInstance(30, ("b",), (RuntimeSegment(0, 4, 1),)),
        RuntimeInstance(10, ("a",), (RuntimeSegment(0, 4, 1),)),
    )
    s = _nested(_policy((0, 4, 1), instances=inst))
    assert s._group_for(Request(0, 0.0, 20, 3)) is s.groups[1]  # |20 − 10| = |20 − 30|: the tie goes to 10
    assert s._group_for(Request(1, 0.0, 21, 3)) is s.groups[0]


@pytest.mark.parametrize("name, rule", [("nested-wait", "cohort"), ("nested-wait-capped", "capped")])
def test_nested_wait_takes_a_prompt_whose_first_token_exactly_fills_the_cache_and_refuses_one_more(name, rule):
    # output lengths are unknown: a request must hold its prompt and its first decode token, l + 1
    from fluid.errors import InputError

    policy = _policy((0, 3, 1), rule=rule)
    s = make_scheduler(name, KVBlockManager(10, 1), policy=policy)
    s.add_request(Request(0, 0.0, 9, 50))  # 9 + 1 = 10 tokens: exactly the cache (output 50 is not read)
    with pytest.raises(InputError, match="needs 11 KV tokens at once") as info:
        s.add_request(Request(1, 0.0, 10, 1))  # 10 + 1 = 11, though the 10-token prompt alone fits
    assert "request 1 " in str(info.value)


def test_a_request_that_outgrows_the_whole_cache_is_refused_at_its_restart_not_looped():
    # Nested WAIT does not know output lengths: a prompt of 10 is admitted into a cache of 32, decodes
    # until the cache is full, is evicted, and its re-prefill (prompt + generated, 33 tokens) fits no
    # empty cache: refused with what it needs, instead of evicting residents that are not there
    from fluid.errors import InputError

    s = make_scheduler("nested-wait", KVBlockManager(32, 1), policy=RuntimePolicy("nested_wait", "cohort", segments=(RuntimeSegment(0, 40, 1),)))
    with pytest.raises(InputError, match=r"request 0 \(prompt 10, output 40 tokens\) needs 33 KV tokens at once \(its prefill\)"):
        simulate(s, [Request(0, 0.0, 10, 40)], AffineBatchTime(0.01, 1e-6))
