"""Persistent scratch for kernels that finish a reduction in the last program to arrive.

A split kernel (split-K GEMV, split-context decode attention) has each program write a partial and
bump its tile's arrival counter; the program that sees the count reach the number of parts sums the
partials in a fixed order and resets the counter to zero, so the counters are ready for the next
launch and for every CUDA-graph replay without a memset. Kernels on one stream run one after
another, so one buffer of each kind per device serves them all. Both must exist before a graph
capture starts (the warm-up run before capture allocates them); growing one during a capture is
an error rather than a silent allocation inside the graph.
"""

from __future__ import annotations

import torch

_BUFFERS: dict = {}  # (device, kind) -> tensor


def _persistent(device: torch.device, kind: str, numel: int, dtype: torch.dtype, zeroed: bool) -> torch.Tensor:
    have = _BUFFERS.get((device, kind))
    if have is None or have.numel() < numel:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(f"split-kernel {kind} must be allocated before CUDA-graph capture: run the step once first")
        size = max(numel, 0 if have is None else have.numel())
        have = (torch.zeros if zeroed else torch.empty)(size, dtype=dtype, device=device)
        _BUFFERS[(device, kind)] = have
    return have


def arrival_counters(device: torch.device, count: int) -> torch.Tensor:
    """At least `count` zeroed int32 counters on `device` (each kernel leaves them zeroed)."""
    return _persistent(device, "arrival counters", max(count, 4096), torch.int32, zeroed=True)


def split_partials(device: torch.device, numel: int) -> torch.Tensor:
    """At least `numel` fp32 elements for the partial results of split products."""
    return _persistent(device, "partials", numel, torch.float32, zeroed=False)
