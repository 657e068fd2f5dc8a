"""`StepTimer(sustain_s=...)`: each batch runs back to back, untimed, for `sustain_s` seconds
before its warm-up and timed repeats (the power state of a busy loop), on a fake engine whose
every step advances a fake clock by exactly 4 ms, so the counts are exact."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from runtime.gpu import step_timer
from runtime.gpu.step_timer import StepTimer

STEP_S = 0.004


class _Engine:
    def __init__(self, clock):
        self.clock = clock
        self.pool = SimpleNamespace(shape=SimpleNamespace(capacity_tokens=16_384), block_size=16)
        self.runner = SimpleNamespace(config=SimpleNamespace(vocab_size=1000), max_positions=4096)
        self.sequences = {}
        self.calls = []  # (clock at the step's start, number of sequences in it)
        self._prep_end, self._used_graph = 0.0, True

    def execute(self, batch):
        self.calls.append((self.clock.now, len(batch.items)))
        self._prep_end = self.clock.now
        self.clock.now += STEP_S


class _Clock:
    def __init__(self):
        self.now = 0.0

    def perf_counter(self):
        return self.now


@pytest.fixture
def engine(monkeypatch):
    clock = _Clock()
    monkeypatch.setattr(step_timer, "time", SimpleNamespace(perf_counter=clock.perf_counter))
    return _Engine(clock)


def test_a_point_runs_until_exactly_the_sustain_time_then_is_timed(engine):
    timer = StepTimer(engine, sustain_s=0.02)
    t, shape = timer.time_s([(1, 64)] * 3, repeats=5, warmup=2)
    # steps start at 0, 4, 8, 12, 16 ms; at 20 ms the elapsed time equals the sustain time: it stops
    assert timer.sustained_steps == 5
    assert len(engine.calls) == 5 + 2 + 5
    assert engine.calls[5][0] == pytest.approx(0.02)  # the first warm-up step, right after
    assert t == pytest.approx(STEP_S) and shape.num_decodes == 3


def test_several_batches_are_sustained_round_robin(engine):
    timer = StepTimer(engine, sustain_s=0.02)
    rows = timer.time_interleaved_s([[(1, 64)] * 2, [(48, 0)]], repeats=3, warmup=0)
    # rounds of two steps start at 0, 8 and 16 ms; the third ends at 24 ms
    assert timer.sustained_steps == 6
    assert [n for _, n in engine.calls[:6]] == [2, 1, 2, 1, 2, 1]
    assert len(engine.calls) == 6 + 2 * 3 and [r["step_s"] for r in rows] == pytest.approx([STEP_S, STEP_S])


def test_no_sustain_by_default(engine):
    timer = StepTimer(engine)
    timer.time_s([(1, 64)], repeats=5, warmup=2)
    assert timer.sustained_steps == 0 and len(engine.calls) == 7
