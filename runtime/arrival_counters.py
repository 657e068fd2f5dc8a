"""Zeroed int32 arrival counters for kernels that finish a reduction in the last program to arrive.

A split kernel (split-K GEMV, split-context decode attention) has each program write a partial and
bump its tile's counter; the program that sees the count reach the number of parts sums the
partials in a fixed order and resets the counter to zero, so the buffer is ready for the next
launch and for every CUDA-graph replay without a memset. Kernels on one stream run one after
another, so one buffer per device serves them all. It must exist before a graph capture starts
(the warm-up run before capture allocates it).
"""

from __future__ import annotations

import torch

_BY_DEVICE: dict = {}


def arrival_counters(device: torch.device, count: int) -> torch.Tensor:
    """At least `count` zeroed counters on `device`, allocated once (grown outside capture only)."""
    have = _BY_DEVICE.get(device)
    if have is None or have.numel() < count:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError("arrival counters must be allocated before CUDA-graph capture: run the step once first")
        have = torch.zeros(max(count, 4096, 0 if have is None else have.numel()), dtype=torch.int32, device=device)
        _BY_DEVICE[device] = have
    return have
