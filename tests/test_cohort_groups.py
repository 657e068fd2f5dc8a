"""Stage queues of WAIT / Nested WAIT (`runtime/schedulers/cohorts.py`): which segments are ready,
at exactly their thresholds and exactly at their drain deadlines."""

from __future__ import annotations

import math

import pytest

from runtime.request import Request
from runtime.schedulers.cohorts import BEYOND_LAST_STAGE, CohortGroup


def _group():
    # segments: stages 0..2 (threshold 3), 3..5 (threshold 2), 6.. (threshold 1)
    return CohortGroup("g", [(0, 2, 3), (3, 5, 2), (6, 9, 1)])


def _resident(rid, last_token_s):
    r = Request(rid, 0.0, 4, 20)
    r.token_times_s.append(last_token_s)
    return r


def test_segments_and_their_last_stage():
    g = _group()
    assert [g.segment_of(s) for s in (0, 2, 3, 5, 6, 100)] == [0, 0, 1, 1, 2, 2]
    assert g.last_stages == [2, 5, BEYOND_LAST_STAGE]
    with pytest.raises(ValueError, match="start at stage 0"):
        CohortGroup("bad", [(1, 4, 2)])


@pytest.mark.parametrize(("waiting", "at_entry_2", "at_entry_3", "k"), [
    (3, 2, 1, 3),  # every entry exactly at its threshold: all three segments
    (2, 2, 1, 0),  # one prompt short at segment 1: nothing (no overdue request)
    (3, 1, 1, 1),  # segment 2's entry one short: segment 1 only
    (3, 2, 0, 2),
])
def test_ready_segments_at_exactly_the_thresholds(waiting, at_entry_2, at_entry_3, k):
    g = _group()
    for i in range(waiting):
        g.enqueue_waiting(Request(i, 0.0, 4, 20))
    if at_entry_2:
        g.push_stage(3, [_resident(10 + i, 0.0) for i in range(at_entry_2)])
    if at_entry_3:
        g.push_stage(6, [_resident(20 + i, 0.0) for i in range(at_entry_3)])
    assert g.ready_segments(0.0, math.inf, draining=False) == k


def test_drain_serves_up_to_the_segment_of_an_overdue_request_from_its_deadline_on():
    g = _group()
    g.enqueue_waiting(Request(0, 1.0, 4, 20))  # one prompt: below threshold 3
    g.push_stage(4, [_resident(1, 2.0)])  # segment 2, its last token at 2.0
    assert g.due_times_s(0.5) == [1.5, 2.5, math.inf]
    assert g.ready_segments(1.4, 0.5, draining=False) == 0
    assert g.ready_segments(1.5, 0.5, draining=False) == 1  # exactly at the deadline: overdue
    assert g.ready_segments(2.5, 0.5, draining=False) == 2
    assert g.ready_segments(0.0, 0.5, draining=True) == 3
    assert CohortGroup("e", [(0, 2, 3)]).ready_segments(0.0, 0.5, draining=True) == 0  # empty: nothing


def test_due_times_follow_the_queue_fronts_after_changes():
    g = _group()
    g.enqueue_waiting(Request(0, 1.0, 4, 20))
    assert g.due_times_s(1.0)[0] == 2.0
    g.enqueue_waiting(Request(1, 0.5, 4, 20), front=True)  # a restart goes first
    assert g.due_times_s(1.0)[0] == 1.5
    r = _resident(2, 3.0)
    g.push_stage(7, [r])
    g.changed()
    assert g.due_times_s(1.0)[2] == 4.0
    g.remove_resident(r, 7)
    assert 7 not in g.stages and g.due_times_s(1.0)[2] == math.inf
