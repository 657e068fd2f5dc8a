"""Variable-length paged attention (one launch for every sequence of a step) and the graphed
prefill / mixed steps built on it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from varlen_cases import check  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("seed", [0, 1])
def test_varlen_kernel_matches_reference_in_triton_interpreter(seed):
    """CPU: the kernel itself (not a torch stand-in) under Triton's interpreter, fp32."""
    pytest.importorskip("triton")
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "varlen_cases.py"), str(seed)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stdout + proc.stderr[-3000:]


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_varlen_kernel_matches_reference_on_cuda(dtype, tol):
    assert check("cuda", dtype, seed=3, tol=tol) == []


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize(
    "budget, max_seqs, evict_every, lengths",
    [
        (256, 6, 0, [(11, 5), (23, 4), (7, 8), (30, 3)]),  # a cohort of whole prefills, then decodes
        (9, 4, 0, [(25, 5), (18, 6), (9, 4)]),  # chunks on cached prefixes beside decodes
        (16, 4, 5, [(14, 9), (21, 7), (10, 8), (17, 6)]),  # evictions and re-prefills
    ],
)
@pytest.mark.parametrize("mixed_graphs", [True, False])
@pytest.mark.parametrize("overlap_host", [False, True])
def test_graphed_mixed_steps_match_transformers(budget, max_seqs, evict_every, lengths, mixed_graphs, overlap_host):
    """fp32 on CUDA: greedy tokens equal transformers', logits within 1e-3, with the prefill / mixed
    steps replayed from graphs (all of them, they fit the buckets) or run eagerly (none graphed);
    `overlap_host`: each step scheduled and prepared while the one before runs (its input ids
    filled from the tokens that step sampled)."""
    from engine_helpers import TinyChunkedScheduler, reference_check

    from runtime.gpu.checkpoint import build_random_model
    from runtime.gpu.engine import Engine
    from runtime.gpu.kv_pool import KVPool, PoolShape
    from runtime.gpu.model import LlamaRunner
    from runtime.gpu.model_presets import resolve_model_config
    from runtime.kv_blocks import KVBlockManager
    from runtime.request import Request

    cfg = resolve_model_config("tiny-llama")
    hf = build_random_model(cfg, dtype=torch.float32, device="cuda", seed=5)
    runner = LlamaRunner.from_hf(hf)
    d = cfg.hidden_size // cfg.num_attention_heads
    pool = KVPool(PoolShape(cfg.num_hidden_layers, 64, 4, cfg.num_key_value_heads, d, 4), dtype=torch.float32, device="cuda")
    engine = Engine(runner, pool, keep_logits=True, seed=2, mixed_graphs=mixed_graphs)
    sched = TinyChunkedScheduler(KVBlockManager(64 * 4, 4, track_block_ids=True), token_budget=budget, max_seqs=max_seqs, evict_every=evict_every)
    reqs = [Request(i, 0.0, p, o) for i, (p, o) in enumerate(lengths)]
    result = engine.run(sched, reqs, overlap_host=overlap_host)
    assert all(r.finished for r in reqs)
    if overlap_host:
        assert sum(row["hidden_host_s"] > 0 for row in result.step_rows()) > 0
    graphed_prefill_steps = sum(1 for s in result.steps if s.shape.num_prefills and s.graph)
    prefill_steps = sum(1 for s in result.steps if s.shape.num_prefills)
    assert prefill_steps > 0 and graphed_prefill_steps == (prefill_steps if mixed_graphs else 0)
    assert result.restart_token_mismatches == 0
    mismatches, max_diff, _ = reference_check(hf, engine, reqs, device="cuda")
    print(f"graphed prefill steps {graphed_prefill_steps}, max |logit diff| {max_diff:.2e}")
    assert mismatches == 0
    assert max_diff < 1e-3
