"""After the engine's warm-up, an open-loop run compiles no Triton kernel (CUDA only).

A compile in the middle of a run stalls the GPU for a fraction of a second while arrivals keep
coming, which shows up as a burst of queueing in every latency figure. The run happens in a fresh
process (`benchmarks/trace_compiles.py`), so kernels compiled by other tests cannot hide one.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("scheduler", ["vllm-v1", "sarathi"])
def test_open_loop_run_compiles_nothing_after_warmup(scheduler, tmp_path):
    # mixed prefill + decode steps over short contexts: eager decode attention over block tables
    # a few blocks wide, unlike the decode graphs' warm-up (it caught the paged-decode kernels
    # specialising on table width)
    cmd = [sys.executable, str(ROOT / "benchmarks" / "trace_compiles.py"), "run", "default", "--scheduler", scheduler,
           "--model", "tiny-llama", "--device", "cuda", "--requests", "150", "--kv-tokens", "23000", "--out", str(tmp_path / "run")]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_CACHE_DIR": str(tmp_path / "triton-cache")}
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "engine run starts" in done.stdout
    assert "0 compile(s) after the run started" in done.stdout, done.stdout[-3000:]
