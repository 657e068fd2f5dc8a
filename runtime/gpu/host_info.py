"""What a GPU result depends on besides the GPU: the host's CPU, and how fast it runs Python and
launches kernels (an engine step is partly host work, so two hosts with one GPU model can differ).

`describe_host()` is recorded beside device and versions in every GPU result file (calibration,
run summaries, benchmarks): CPU model and cores, the time of a 10⁶-iteration Python loop, the
median latency of one tiny kernel launch followed by a device sync, and under `gpu` the GPU's own
speed: its clocks, power and temperature as `nvidia-smi` reports them, a bf16 GEMM rate and a
device-to-device copy bandwidth. Two H200s of one image differ: compute-bound grid steps ran up
to 3.6 % apart between machines whose hosts ran Python alike (`benchmarks/fidelity_split.py`).
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


NVIDIA_SMI_FIELDS = ("clocks.sm", "clocks.max.sm", "clocks.mem", "clocks.max.mem", "power.draw", "power.limit", "temperature.gpu",
                     "driver_version")


def parse_nvidia_smi(text: str) -> dict:
    """The first GPU's line of `nvidia-smi --query-gpu=NVIDIA_SMI_FIELDS --format=csv,noheader,nounits`:
    numbers as floats, anything else ("[N/A]", the driver version) as the text."""
    first = text.strip().splitlines()[0] if text.strip() else ""
    values = [v.strip() for v in first.split(",")]
    if len(values) != len(NVIDIA_SMI_FIELDS):
        return {}
    out = {}
    for name, value in zip(NVIDIA_SMI_FIELDS, values):
        try:
            out[name] = float(value) if name != "driver_version" else value
        except ValueError:
            out[name] = value
    return out


def gpu_speed() -> dict | None:
    """Clocks, power and temperature (nvidia-smi, when present), the median rate of a bf16
    8192³ GEMM (TFLOP/s) and of a 256 MiB device copy (GB/s read + write); None without CUDA."""
    import shutil
    import subprocess

    import torch

    from runtime.gpu.step_timer import cuda_event_time_s

    if not torch.cuda.is_available():
        return None
    out: dict = {}
    if shutil.which("nvidia-smi"):
        try:
            text = subprocess.run(["nvidia-smi", f"--query-gpu={','.join(NVIDIA_SMI_FIELDS)}", "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=10, check=False).stdout
            out["nvidia_smi"] = parse_nvidia_smi(text)
        except (OSError, subprocess.SubprocessError):
            out["nvidia_smi"] = {}
    n = 8192
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    src = torch.empty(1 << 28, device="cuda", dtype=torch.uint8)  # 256 MiB: inside the pool sizing's margin
    dst = torch.empty_like(src)
    out["gemm_bf16_tflops"] = 2 * n**3 / cuda_event_time_s(lambda: a @ b) / 1e12
    out["copy_gb_s"] = 2 * src.numel() / cuda_event_time_s(lambda: dst.copy_(src)) / 1e9
    del a, b, src, dst
    torch.cuda.empty_cache()
    return out


def host_probe() -> dict:
    """A quick look at the host's speed now (about 10 ms): a 10⁵-iteration Python loop (median of 3)
    and, with CUDA, one tiny launch + sync (median of 50), at wall time `at_s`. Taken beside each
    calibration point and each live run: a VM's host does not keep one speed through a run (H200
    run 17: the loop at 1.8× run 16's time when the run began), and an engine step is partly host."""
    launch = launch_sync_s(50)
    return {"at_s": time.time(), "python_loop_1e5_s": python_loop_s(10**5, repeats=3),
            "launch_sync_us": None if launch is None else launch * 1e6}


def describe_host() -> dict:
    launch = launch_sync_s()
    return {
        "cpu_model": _cpu_model(),
        "cpu_cores": os.cpu_count(),
        "hostname": platform.node(),
        "python": sys.version.split()[0],
        "python_loop_1e6_s": python_loop_s(),
        "launch_sync_us": None if launch is None else launch * 1e6,
        "gpu": gpu_speed(),
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
