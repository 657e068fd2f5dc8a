"""The live loop's frozen heap (runtime/collector.py): what is frozen, what is recorded, and on which clock."""

from __future__ import annotations

import gc

from runtime.collector import CollectorPause, frozen_heap, pause_summary


def test_the_heap_alive_at_the_start_is_frozen_inside_and_released_after():
    keep = [[i] for i in range(1000)]  # containers alive before the block
    assert gc.get_freeze_count() == 0
    with frozen_heap() as pauses:
        assert gc.get_freeze_count() >= len(keep)  # moved out of every later collection's walk
        assert gc.isenabled()  # the collector still runs for what the block creates
        assert pauses == []
    assert gc.get_freeze_count() == 0 and not any(f is _record for f in gc.callbacks)


def _record(phase, info):  # a stand-in callback name: none of ours may be left in gc.callbacks
    pass


def test_each_collection_inside_is_recorded_with_its_generation_and_start():
    import time

    before = time.perf_counter()
    with frozen_heap() as pauses:
        gc.collect(1)
        gc.collect(2)
    after = time.perf_counter()
    assert [p.generation for p in pauses] == [1, 2]
    assert all(before <= p.start_s <= after and 0 <= p.seconds <= after - before for p in pauses)
    assert pauses[0].start_s <= pauses[1].start_s
    n = len(gc.callbacks)
    with frozen_heap():
        assert len(gc.callbacks) == n + 1
    assert len(gc.callbacks) == n  # its callback is removed on the way out


def test_pauses_move_onto_a_run_clock_and_summarize_by_hand():
    pauses = [CollectorPause(0, 100.5, 0.001), CollectorPause(2, 101.25, 0.3), CollectorPause(0, 102.0, 0.002)]
    on_clock = [p.on_clock(100.0) for p in pauses]
    assert [p.start_s for p in on_clock] == [0.5, 1.25, 2.0] and [p.seconds for p in on_clock] == [0.001, 0.3, 0.002]
    s = pause_summary(on_clock)
    assert s["collections_by_generation"] == {0: 2, 1: 0, 2: 1}
    assert s["total_s"] == 0.001 + 0.3 + 0.002 and s["longest_s"] == 0.3 and s["longest_at_s"] == 1.25
    assert pause_summary([]) == {"collections_by_generation": {0: 0, 1: 0, 2: 0}, "total_s": 0, "longest_s": 0.0, "longest_at_s": None}
