"""What a GPU result depends on besides the GPU: the host's CPU, and how fast it runs Python and
launches kernels (an engine step is partly host work, so two hosts with one GPU model can differ).

`describe_host()` is recorded beside device and versions in every GPU result file (calibration,
run summaries, benchmarks): CPU model and cores, the time of a 10⁶-iteration Python loop, and the
median latency of one tiny kernel launch followed by a device sync.
"""

from __future__ import annotations

import os
import platform
import statistics
import sys
import time


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def python_loop_s(iterations: int = 10**6, repeats: int = 5) -> float:
    """Median wall time of a plain `for` loop adding integers (the interpreter's speed)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        acc = 0
        for i in range(iterations):
            acc += i
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def launch_sync_s(repeats: int = 200) -> float | None:
    """Median time of one tiny CUDA kernel launch + synchronize (None without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return None
    x = torch.zeros(1, device="cuda")
    for _ in range(20):
        x.add_(1)
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        x.add_(1)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def describe_host() -> dict:
    launch = launch_sync_s()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "python_loop_1e6_s": python_loop_s(),
        "launch_sync_us": None if launch is None else launch * 1e6,
    }


def versions() -> dict:
    """torch, CUDA, Triton, transformers and Python versions (what a GPU figure was made with)."""
    import torch

    out = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": sys.version.split()[0]}
    for name in ("triton", "transformers"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    return out
