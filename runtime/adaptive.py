"""What the adaptive mode measures online, and when it changes the caps (docs/adaptive.md).

Standard library only. `RateEstimator` counts arrivals per class over a sliding window;
`LengthWindow` keeps the (prompt, output) lengths of the requests that finished in the window
(Nested WAIT learns its class mix from them: a request reveals its output length by finishing);
`CapController` re-solves the caps every period through `thresholds.adaptive` and applies a new
set only past the hysteresis (at once when a cap grows, after two consecutive periods when it
shrinks). The schedulers that use them are in `runtime/schedulers/adaptive.py`.
"""

from __future__ import annotations

from collections import deque
from typing import Callable

from thresholds.adaptive import AdaptiveSettings


class RateEstimator:
    """Per-class arrival rates over the last `window_s` seconds.

    Until the clock has run a whole window, the part not yet observed is filled in at the
    `prior_rates_per_s` (the rates the policy was solved for): an estimate that starts at the solved
    rates and moves to the measured ones as the window fills, never dividing by a short interval.
    """

    __slots__ = ("window_s", "prior", "_times", "_start_s")

    def __init__(self, prior_rates_per_s: dict[str, float], window_s: float, start_s: float = 0.0):
        self.window_s = float(window_s)
        self.prior = dict(prior_rates_per_s)
        self._times: dict[str, deque[float]] = {name: deque() for name in self.prior}
        self._start_s = start_s

    def observe(self, name: str, arrival_s: float) -> None:
        self._times[name].append(arrival_s)

    def rates_per_s(self, now_s: float) -> dict[str, float]:
        since = now_s - self.window_s
        unseen_s = max(0.0, self.window_s - (now_s - self._start_s))
        out = {}
        for name, times in self._times.items():
            while times and times[0] <= since:
                times.popleft()
            # the executor adds a request when the clock reaches its arrival: all of `times` is ≤ now
            out[name] = (len(times) + self.prior[name] * unseen_s) / self.window_s
        return out


class LengthWindow:
    """(prompt, output) lengths of the requests that finished in the last `window_s` seconds."""

    __slots__ = ("window_s", "_items")

    def __init__(self, window_s: float):
        self.window_s = float(window_s)
        self._items: deque[tuple[float, int, int]] = deque()

    def observe(self, finish_s: float, prompt_tokens: int, output_tokens: int) -> None:
        self._items.append((finish_s, prompt_tokens, output_tokens))

    def lengths(self, now_s: float) -> list[tuple[int, int]]:
        since = now_s - self.window_s
        items = self._items
        while items and items[0][0] <= since:
            items.popleft()
        return [(p, o) for _, p, o in items]


class CapController:
    """Re-solves caps once per period and decides, with hysteresis, whether to apply them.

    `resolve(now_s)` returns the candidate caps ({group: cap}); `current` are the caps in force.
    `history` records (time, caps, estimate scale) of every applied change, for figures and tests.
    """

    def __init__(self, settings: AdaptiveSettings, current: dict[str, int],
                 resolve: Callable[[float], tuple[dict[str, int], float]]):
        self.settings = settings
        self.current = dict(current)
        self._resolve = resolve
        self._next_s = settings.period_s
        self._last_s = 0.0
        self._no_shrink_until_s = 0.0
        self._pending_shrink: dict[str, int] | None = None
        self.history: list[tuple[float, dict[str, int], float]] = [(0.0, dict(current), 1.0)]
        self.stats = {"resolves": 0, "changes": 0, "held_by_hysteresis": 0, "estimate_clipped": 0, "backlog_resolves": 0, "held_after_backlog": 0}

    def _moved(self, old: int, new: int) -> bool:
        return new != old and abs(new - old) >= self.settings.hysteresis * max(old, 1)

    def maybe_update(self, now_s: float, backlog: bool = False) -> dict[str, int] | None:
        """The new caps to apply now (None: keep the current ones).

        At each period boundary: a full re-solve (growth at once, a shrink after two periods).
        Between them, when `backlog` (`AdaptiveSettings.backlog_wait_s`) and that long has passed
        since the last re-solve: an early re-solve that may only grow caps — growth on evidence,
        not a window later; shrinks stay on the period's clock."""
        periodic = now_s >= self._next_s
        if not periodic and not (backlog and now_s >= self._last_s + self.settings.backlog_wait_s):
            return None
        self._last_s = now_s
        proposal, scale = self._resolve(now_s)
        self.stats["resolves"] += 1
        if scale < 1.0:
            self.stats["estimate_clipped"] += 1
        if backlog:
            # the window's estimate is stale until it has filled again after this evidence
            self._no_shrink_until_s = now_s + self.settings.window_s
        if not periodic:
            self.stats["backlog_resolves"] += 1
            proposal = {g: max(c, self.current[g]) for g, c in proposal.items()}
        else:
            self._next_s = now_s + self.settings.period_s
        grows = any(self._moved(self.current[g], c) and c > self.current[g] for g, c in proposal.items())
        shrinks = any(self._moved(self.current[g], c) and c < self.current[g] for g, c in proposal.items())
        if not grows and not shrinks:
            if periodic:
                self._pending_shrink = None
            return None
        if not grows and now_s < self._no_shrink_until_s:  # a backlog less than a window ago
            self.stats["held_after_backlog"] += 1
            return None
        if not grows:  # only shrinking: wait for a second period that agrees
            previous, self._pending_shrink = self._pending_shrink, proposal
            if previous is None:
                self.stats["held_by_hysteresis"] += 1
                return None
            # the milder of the two shrinks
            proposal = {g: max(c, previous.get(g, c)) for g, c in proposal.items()}
        self._pending_shrink = None
        self.current = dict(proposal)
        self.history.append((now_s, dict(proposal), scale))
        self.stats["changes"] += 1
        return dict(proposal)
