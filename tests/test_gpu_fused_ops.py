"""The fused Triton kernels (runtime.gpu.kernels.fused_ops) against the torch path they replace (CUDA only)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

from runtime.gpu.attention import PrefillSeq  # noqa: E402
from runtime.gpu.checkpoint import build_random_model  # noqa: E402
from runtime.gpu.kv_pool import KVPool, PoolShape  # noqa: E402
from runtime.gpu.model import LlamaRunner, StepInputs  # noqa: E402
from runtime.gpu.model_presets import resolve_model_config  # noqa: E402


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_add_rms_norm_matches_torch(dtype):
    from runtime.gpu.kernels.fused_ops import add_rms_norm

    torch.manual_seed(0)
    res = torch.randn(37, 4096, device="cuda", dtype=dtype)
    delta = torch.randn_like(res)
    w = torch.randn(4096, device="cuda", dtype=dtype)
    expect_res = res + delta
    xf = expect_res.float()
    expect = w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    got_res = res.clone()
    got = add_rms_norm(got_res, delta, w, 1e-5)
    assert torch.equal(got_res, expect_res)
    assert (got.float() - expect.float()).abs().max().item() <= 2e-2 * expect.float().abs().max().item()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_silu_mul_matches_torch(dtype):
    from runtime.gpu.kernels.fused_ops import silu_mul

    gu = torch.randn(5, 2 * 3000, device="cuda", dtype=dtype)
    gate, up = gu.chunk(2, dim=-1)
    expect = torch.nn.functional.silu(gate) * up
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert torch.allclose(silu_mul(gu).float(), expect.float(), atol=tol, rtol=tol)


def test_rope_kv_write_matches_torch_and_fills_the_pool():
    from runtime.gpu.kernels.fused_ops import rope_kv_write

    heads, kv_heads, d, tokens = 8, 2, 128, 11
    qkv = torch.randn(tokens, (heads + 2 * kv_heads) * d, device="cuda", dtype=torch.bfloat16)
    positions = torch.randint(0, 500, (tokens,), device="cuda")
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    freqs = torch.arange(512, device="cuda").float()[:, None] * inv[None]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos().bfloat16().contiguous(), emb.sin().bfloat16().contiguous()
    k_cache = torch.zeros(6, 16, kv_heads, d, device="cuda", dtype=torch.bfloat16)
    v_cache = torch.zeros_like(k_cache)
    slots = torch.randperm(6 * 16, device="cuda")[:tokens]
    q, k, v = rope_kv_write(qkv, cos, sin, positions, slots, k_cache, v_cache, heads, kv_heads)
    c, s = cos[positions][:, None], sin[positions][:, None]

    def rope(x):
        return x * c + torch.cat((-x[..., d // 2 :], x[..., : d // 2]), -1) * s

    q_ref = rope(qkv[:, : heads * d].view(tokens, heads, d))
    k_ref = rope(qkv[:, heads * d : (heads + kv_heads) * d].view(tokens, kv_heads, d))
    v_ref = qkv[:, (heads + kv_heads) * d :].view(tokens, kv_heads, d)
    assert (q.float() - q_ref.float()).abs().max().item() < 2e-2
    assert (k.float() - k_ref.float()).abs().max().item() < 2e-2
    assert torch.equal(k_cache.view(-1, kv_heads, d)[slots], k)
    assert torch.equal(v_cache.view(-1, kv_heads, d)[slots], v_ref)
    assert torch.equal(v, v_ref)


def test_fused_forward_equals_torch_forward_fp32():
    """Whole model, mixed step (prefill over a cached prefix + decodes): fused path == torch path."""
    cfg = resolve_model_config("tiny-llama")
    hf = build_random_model(cfg, dtype=torch.float32, device="cuda", seed=1)
    runner = LlamaRunner.from_hf(hf)
    d = cfg.hidden_size // cfg.num_attention_heads
    results = []
    for fused in (False, True):
        runner.use_fused_ops = fused
        pool = KVPool(PoolShape(cfg.num_hidden_layers, 32, 4, cfg.num_key_value_heads, d, 4), dtype=torch.float32, device="cuda")
        table = torch.tensor([7, 3, 9, 1, 12, 5], device="cuda")
        ids = torch.randint(0, cfg.vocab_size, (20,), generator=torch.Generator().manual_seed(0)).cuda()
        slots = torch.stack([table[p // 4] * 4 + p % 4 for p in range(20)])
        first = StepInputs(ids[:12], torch.arange(12, device="cuda"), slots[:12], [PrefillSeq(0, 12, 0, None)], None, None, None)
        out1 = runner.forward(first, pool)
        dec_table = torch.tensor([[20, 21, 0, 0]], device="cuda", dtype=torch.int32)
        second = StepInputs(
            torch.cat([ids[12:], ids[:1]]), torch.cat([torch.arange(12, 20, device="cuda"), torch.zeros(1, dtype=torch.int64, device="cuda")]),
            torch.cat([slots[12:], torch.tensor([80], device="cuda")]),
            [PrefillSeq(0, 8, 12, table)], dec_table, torch.tensor([1], device="cuda", dtype=torch.int32), None, num_decode_rows=1,
        )
        out2 = runner.forward(second, pool)
        results.append((out1, out2))
    for a, b in zip(results[0], results[1]):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("split", [True, False])
def test_paged_decode_split_and_whole_match_reference(split):
    """Both decode kernels (split over context partitions, combined by the last to arrive, and one
    program per head) vs torch."""
    from runtime.gpu.attention import paged_decode_reference
    from runtime.gpu.kernels.attention_triton import paged_decode_triton

    torch.manual_seed(1)
    for batch, ctx, heads, kv_heads in [(1, 1, 32, 32), (1, 513, 32, 32), (3, 2000, 8, 2), (2, 64, 4, 4)]:
        per = -(-ctx // 16) + 3  # a wider table than the context, as in a CUDA-graph bucket
        blocks = batch * per + 1
        k = torch.randn(blocks, 16, kv_heads, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        tables = torch.randperm(blocks - 1, device="cuda")[: batch * per].view(batch, per).int()
        lens = torch.randint(1, ctx + 1, (batch,), device="cuda", dtype=torch.int32)
        lens[0] = ctx
        q = torch.randn(batch, heads, 128, device="cuda", dtype=torch.bfloat16)
        ref = paged_decode_reference(q, k, v, tables, lens, 0.088).float()
        for _ in range(2):  # the second launch finds the arrival counters the first one reset
            got = paged_decode_triton(q, k, v, tables, lens, 0.088, split=split).float()
            assert (got - ref).abs().max().item() < 2e-2, (batch, ctx, heads, kv_heads)


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3, 4])
def test_gemv_variants_match_torch(dtype, rows):
    """Plain, RMSNorm-prologue, SiLU·mul-prologue and residual-add epilogue GEMVs vs torch, on
    sizes that are not multiples of any tile, for every candidate tile (split-K ones included,
    and one whose last split is shorter); each config runs twice, so a split-K arrival counter
    left dirty by the first launch would break the second."""
    import triton

    from runtime.gpu.kernels.gemv_triton import CANDIDATES, GemvConfig, gemv

    torch.manual_seed(2)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    n, k = 300, 1000
    w = torch.randn(n, k, device="cuda", dtype=dtype) / k**0.5
    x = torch.randn(rows, k, device="cuda", dtype=dtype)
    norm_w = torch.randn(k, device="cuda", dtype=dtype)
    gu = torch.randn(rows, 2 * k, device="cuda", dtype=dtype)
    residual = torch.randn(rows, n, device="cuda", dtype=dtype)
    xf = x.float()
    normed = norm_w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    gate, up = gu.chunk(2, dim=-1)
    act = torch.nn.functional.silu(gate) * up
    ran = 0
    for config in CANDIDATES + (GemvConfig(16, 64, 3, 4, 2),):  # 16 K tiles in splits of 6, 6, 4
        try:
            for _ in range(2):
                assert _rel_err(gemv(x, w, config=config), x @ w.T) < tol
                assert _rel_err(gemv(x, w, norm_weight=norm_w, eps=1e-5, config=config), normed @ w.T) < tol
                assert _rel_err(gemv(gu, w, silu=True, config=config), act @ w.T) < tol
                got = residual.clone()
                out = gemv(x, w, add_to=got, config=config)
                assert out.data_ptr() == got.data_ptr()
                assert _rel_err(got, residual + x @ w.T) < tol
        except triton.runtime.errors.OutOfResources:
            assert dtype == torch.float32, config  # fp32 tiles may outgrow shared memory; bf16 must fit
            continue
        ran += 1
    assert ran >= 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemv_decode_forward_matches_fused_and_torch(dtype):
    """Whole model, a decode step of 3 rows after a prefill: the GEMV path vs the fused path
    (cuBLAS) and the plain torch path; fp32 agrees to 1e-5, bf16 to rounding."""
    from runtime.gpu.gemv_plan import GemvPlan

    cfg = resolve_model_config("tiny-llama")
    hf = build_random_model(cfg, dtype=dtype, device="cuda", seed=3)
    runner = LlamaRunner.from_hf(hf)
    d = cfg.hidden_size // cfg.num_attention_heads
    ids = torch.randint(0, cfg.vocab_size, (12,), generator=torch.Generator().manual_seed(0)).cuda()
    outs = {}
    for label, fused, plan in (("torch", False, None), ("fused", True, GemvPlan(enabled=False)), ("gemv", True, GemvPlan(enabled=True))):
        runner.use_fused_ops, runner.gemv_plan = fused, plan
        pool = KVPool(PoolShape(cfg.num_hidden_layers, 32, 4, cfg.num_key_value_heads, d, 4 if dtype == torch.float32 else 2), dtype=dtype, device="cuda")
        slots = torch.arange(12, device="cuda") + 4  # blocks 1..3
        runner.forward(StepInputs(ids, torch.arange(12, device="cuda"), slots, [PrefillSeq(0, 12, 0, None)], None, None, None), pool)
        tables = torch.tensor([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 3, 6]], device="cuda", dtype=torch.int32)
        dec = StepInputs(
            ids[:3], torch.full((3,), 12, device="cuda"), torch.tensor([16, 20, 24], device="cuda"), [], tables,
            torch.full((3,), 13, dtype=torch.int32, device="cuda"), None, num_decode_rows=3,
        )
        outs[label] = runner.forward(dec, pool)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert _rel_err(outs["gemv"], outs["fused"]) < tol
    assert _rel_err(outs["gemv"], outs["torch"]) < tol


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 3])
def test_gemv_rope_epilogue_matches_linear_then_rope_kv_write(dtype, rows):
    """The QKV GEMV with RMSNorm, RoPE and the KV-cache write in its epilogue (GQA 8/2 heads of 64)
    against F.linear on the normalised input followed by `rope_kv_write`: same q|k|v output and
    the same pool contents, untouched slots left alone."""
    from runtime.gpu.kernels.fused_ops import rope_kv_write
    from runtime.gpu.kernels.gemv_triton import GemvConfig, RopeKV, gemv

    torch.manual_seed(4)
    heads, kv_heads, d, hidden = 8, 2, 64, 320
    n = (heads + 2 * kv_heads) * d
    w = torch.randn(n, hidden, device="cuda", dtype=dtype) / hidden**0.5
    x = torch.randn(rows, hidden, device="cuda", dtype=dtype)
    norm_w = torch.randn(hidden, device="cuda", dtype=dtype)
    table = torch.randn(100, d, device="cuda", dtype=dtype)
    cos, sin = table, torch.randn_like(table)
    positions = torch.tensor([5, 77, 0][:rows], device="cuda")
    slots = torch.tensor([3, 40, 17][:rows], device="cuda")
    caches = {label: (torch.randn(4, 16, kv_heads, d, device="cuda", dtype=dtype), None) for label in ("ref", "got")}
    caches["got"] = (caches["ref"][0].clone(), caches["ref"][0].clone() + 1)
    caches["ref"] = (caches["ref"][0], caches["ref"][0].clone() + 1)
    xf = x.float()
    normed = norm_w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dtype)
    q_ref, k_ref, v_ref = rope_kv_write(normed @ w.T, cos, sin, positions, slots, *caches["ref"], heads, kv_heads)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for config in (GemvConfig(128, 64, 1, 4, 3), GemvConfig(16, 64, 3, 4, 2)):  # block_n is forced to one head
        rope = RopeKV(cos, sin, positions, slots, *caches["got"], heads, kv_heads)
        out = gemv(x, w, norm_weight=norm_w, eps=1e-5, config=config, rope=rope)
        q, k, v = out.split([heads * d, kv_heads * d, kv_heads * d], dim=-1)
        assert _rel_err(q.reshape(rows, heads, d), q_ref) < tol
        assert _rel_err(k.reshape(rows, kv_heads, d), k_ref) < tol
        assert _rel_err(v.reshape(rows, kv_heads, d), v_ref) < tol
        for got_cache, ref_cache in zip(caches["got"], caches["ref"]):
            assert _rel_err(got_cache, ref_cache) < tol
            flat_got, flat_ref = got_cache.view(-1, kv_heads, d), ref_cache.view(-1, kv_heads, d)
            untouched = torch.ones(flat_got.shape[0], dtype=torch.bool, device="cuda")
            untouched[slots] = False
            assert torch.equal(flat_got[untouched], flat_ref[untouched])
