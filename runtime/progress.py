"""Progress bars for long work (`simulate`, `compare`, `run`, `calibrate`), on stderr only.

A bar is shown only when stderr is a terminal and `--quiet` is not given, and only after the work
has taken `DELAY_S` (short runs stay silent), so pipes, logs and tests see nothing. The hook into
the serving loop is one wrapper around the scheduler (`RequestProgress.watch`): its
`complete_step` counts the requests that finished in that step, so neither the simulator nor the
GPU engine knows about progress. Drawing is tqdm's.
"""

from __future__ import annotations

import sys

DELAY_S = 1.0  # a bar appears only for work longer than this


def progress_enabled(quiet: bool = False, stream=None) -> bool:
    stream = sys.stderr if stream is None else stream
    return not quiet and bool(getattr(stream, "isatty", lambda: False)())


def _bar(total: int, desc: str, unit: str, stream):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, file=stream, delay=DELAY_S, leave=False, dynamic_ncols=True)


class _Watched:
    """A scheduler whose `complete_step` also reports finished requests; everything else is the
    scheduler's own (attribute access is forwarded)."""

    def __init__(self, scheduler, on_done):
        self._scheduler = scheduler
        self._on_done = on_done

    def __getattr__(self, name):
        return getattr(self._scheduler, name)

    def complete_step(self, batch, start_s, end_s):
        out = self._scheduler.complete_step(batch, start_s, end_s)
        done = sum(1 for w in batch.items if w.request.completion_s == end_s)
        if done:
            self._on_done(done)
        return out


class RequestProgress:
    """Requests completed out of `total`; a no-op when disabled."""

    def __init__(self, total: int, desc: str, *, enabled: bool, stream=None):
        self.enabled = enabled
        self.done = 0
        self._bar = _bar(total, desc, "req", sys.stderr if stream is None else stream) if enabled else None

    def add(self, count: int) -> None:
        self.done += count
        if self._bar is not None:
            self._bar.update(count)

    def watch(self, scheduler):
        """The scheduler itself when disabled (no cost), else a counting wrapper."""
        return _Watched(scheduler, self.add) if self.enabled else scheduler

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iterate(items, desc: str, *, enabled: bool, unit: str = "point", stream=None):
    """`items` with a bar over them when enabled (calibration grid points)."""
    if not enabled:
        return items
    items = list(items)
    bar = _bar(len(items), desc, unit, sys.stderr if stream is None else stream)

    def gen():
        try:
            for item in items:
                yield item
                bar.update(1)
        finally:
            bar.close()

    return gen()
