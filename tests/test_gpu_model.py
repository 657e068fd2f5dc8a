"""The Llama forward over the paged pool against transformers, and paged against contiguous attention."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_helpers import tiny_llama  # noqa: E402

from runtime.gpu.attention import PrefillSeq, paged_decode_attention, paged_decode_reference  # noqa: E402
from runtime.gpu.kv_pool import KVPool, PoolShape  # noqa: E402
from runtime.gpu.model import StepInputs  # noqa: E402


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=3)


def _pool(cfg, blocks=64, block_size=4):
    return KVPool(PoolShape(cfg.num_hidden_layers, blocks, block_size, cfg.num_key_value_heads, cfg.hidden_size // cfg.num_attention_heads, 4), dtype=torch.float32, device="cpu")


def _prefill(runner, pool, ids, table, ctx=0):
    """One prefill chunk of `ids` at positions ctx.. over block table `table`; logits of every row."""
    bs = pool.block_size
    n = len(ids)
    slots = [table[p // bs] * bs + p % bs for p in range(ctx, ctx + n)]
    step = StepInputs(
        torch.tensor(ids), torch.arange(ctx, ctx + n), torch.tensor(slots),
        [PrefillSeq(0, n, ctx, torch.tensor(table) if ctx else None)], None, None, None,
    )
    return runner.forward(step, pool)


def test_prefill_logits_match_transformers(tiny):
    cfg, hf, runner = tiny
    ids = torch.randint(0, cfg.vocab_size, (37,)).tolist()
    pool = _pool(cfg)
    table = [5, 2, 9, 11, 0, 7, 3, 8, 1, 4]  # scattered blocks: paging must not matter
    ours = _prefill(runner, pool, ids, table)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([ids])).logits[0]
    assert torch.allclose(ours, ref, atol=1e-4, rtol=1e-4)


def test_chunked_prefill_attends_to_cached_prefix(tiny):
    cfg, hf, runner = tiny
    ids = torch.randint(0, cfg.vocab_size, (30,)).tolist()
    pool = _pool(cfg)
    table = [9, 1, 6, 3, 12, 4, 7, 2]
    _prefill(runner, pool, ids[:13], table)
    second = _prefill(runner, pool, ids[13:], table, ctx=13)
    with torch.no_grad():
        ref = hf(input_ids=torch.tensor([ids])).logits[0, 13:]
    assert torch.allclose(second, ref, atol=1e-4, rtol=1e-4)


def test_paged_decode_equals_contiguous_attention():
    torch.manual_seed(0)
    batch, heads, kv_heads, d, bs = 3, 4, 2, 16, 4
    lens = torch.tensor([1, 9, 14], dtype=torch.int32)
    contiguous_k = torch.randn(batch, 16, kv_heads, d)
    contiguous_v = torch.randn(batch, 16, kv_heads, d)
    k_cache = torch.zeros(20, bs, kv_heads, d)
    v_cache = torch.zeros(20, bs, kv_heads, d)
    tables = torch.tensor([[7, 0, 0, 0], [3, 19, 5, 1], [10, 2, 15, 8]], dtype=torch.int32)
    for b in range(batch):
        for p in range(int(lens[b])):
            k_cache[tables[b, p // bs], p % bs] = contiguous_k[b, p]
            v_cache[tables[b, p // bs], p % bs] = contiguous_v[b, p]
    q = torch.randn(batch, heads, d)
    got = paged_decode_attention(q, k_cache, v_cache, tables, lens, d**-0.5)
    for b in range(batch):
        n = int(lens[b])
        k = contiguous_k[b, :n].repeat_interleave(2, dim=1).transpose(0, 1)  # [heads, n, d]
        v = contiguous_v[b, :n].repeat_interleave(2, dim=1).transpose(0, 1)
        ref = torch.softmax(q[b][:, None, :] @ k.transpose(1, 2) * d**-0.5, dim=-1) @ v  # [heads, 1, d]
        assert torch.allclose(got[b], ref[:, 0], atol=1e-5)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_triton_decode_kernel_matches_reference():
    torch.manual_seed(0)
    for batch, ctx, heads, kv_heads in [(2, 1, 8, 8), (5, 300, 32, 8), (3, 1000, 32, 32)]:
        blocks = batch * (-(-ctx // 16)) + 1
        k = torch.randn(blocks, 16, kv_heads, 128, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        tables = torch.randperm(blocks - 1, device="cuda")[: batch * (-(-ctx // 16))].view(batch, -1).int()
        lens = torch.randint(1, ctx + 1, (batch,), device="cuda", dtype=torch.int32)
        q = torch.randn(batch, heads, 128, device="cuda", dtype=torch.bfloat16)
        got = paged_decode_attention(q, k, v, tables, lens, 0.088).float()
        ref = paged_decode_reference(q, k, v, tables, lens, 0.088).float()
        assert (got - ref).abs().max().item() < 2e-2
