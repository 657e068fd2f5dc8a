"""The engine end to end: greedy tokens and logits against transformers, evictions, memory, CLI."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from engine_helpers import TinyChunkedScheduler, reference_check, tiny_llama  # noqa: E402
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from runtime.gpu.engine import Engine  # noqa: E402
from runtime.kv_blocks import KVBlockManager  # noqa: E402
from runtime.gpu.kv_pool import KVPool, PoolShape  # noqa: E402
from runtime.request import Request  # noqa: E402
from validation.cli import main  # noqa: E402

BLOCK = 4


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(seed=5)


def _engine(cfg, runner, blocks):
    pool = KVPool(PoolShape(cfg.num_hidden_layers, blocks, BLOCK, cfg.num_key_value_heads, 16, 4), dtype=torch.float32, device="cpu")
    return Engine(runner, pool, keep_logits=True, seed=2)


@pytest.mark.parametrize(
    "budget, max_seqs, evict_every, lengths",
    [
        (64, 1, 0, [(20, 6)]),  # single prompt
        (256, 6, 0, [(11, 5), (23, 4), (7, 8), (30, 3)]),  # a batch, whole prefills
        (9, 4, 0, [(25, 5), (18, 6), (9, 4)]),  # chunked prefill mixed with decodes
        (16, 4, 5, [(14, 9), (21, 7), (10, 8), (17, 6)]),  # evictions and restarts
    ],
)
def test_engine_matches_transformers(tiny, budget, max_seqs, evict_every, lengths):
    cfg, hf, runner = tiny
    engine = _engine(cfg, runner, 64)
    sched = TinyChunkedScheduler(KVBlockManager(64 * BLOCK, BLOCK, track_block_ids=True), token_budget=budget, max_seqs=max_seqs, evict_every=evict_every)
    reqs = [Request(i, 0.0, p, o) for i, (p, o) in enumerate(lengths)]
    result = engine.run(sched, reqs)
    assert all(r.finished for r in reqs)
    assert all(len(r.eviction_times_s) == r.restarts for r in reqs)  # the shared loop stamps evictions
    if evict_every:
        assert sum(r.restarts for r in reqs) > 0
    assert result.restart_token_mismatches == 0
    mismatches, max_diff, _ = reference_check(hf, engine, reqs)
    assert mismatches == 0
    assert max_diff < 1e-4


def test_run_at_95_percent_kv_use_completes(tiny):
    cfg, _, runner = tiny
    blocks = 40
    engine = _engine(cfg, runner, blocks)
    kv = KVBlockManager(blocks * BLOCK, BLOCK, track_block_ids=True)
    sched = TinyChunkedScheduler(kv, token_budget=64, max_seqs=8)
    # 8 requests of 19 tokens at completion: 5 blocks each = 40 blocks when all run at once
    reqs = [Request(i, 0.0, 15, 4) for i in range(8)]
    result = engine.run(sched, reqs)
    assert all(r.finished for r in reqs)
    assert result.peak_kv_tokens >= 0.95 * kv.capacity_tokens
    assert kv.free_blocks == kv.num_blocks


@settings(max_examples=15, deadline=None)
@given(st.lists(st.sampled_from(["grow", "release"]), min_size=1, max_size=60), st.integers(0, 5))
def test_block_ids_never_handed_out_twice(ops, seed):
    kv = KVBlockManager(64, 4, track_block_ids=True)
    reqs = [Request(i, 0.0, 8, 4) for i in range(6)]
    for step, op in enumerate(ops):
        r = reqs[(step * 7 + seed) % len(reqs)]
        if op == "grow" and kv.can_grow(r, 3):
            kv.grow(r, 3)
            r.cached_tokens += 3
        elif op == "release":
            kv.release(r)
            r.cached_tokens = 0
        held = [b for q in reqs for b in kv.block_table(q)]
        assert len(held) == len(set(held)) == kv.used_blocks
        assert all(0 <= b < kv.num_blocks for b in held)


def test_cli_run_on_cpu_writes_run_folder(tmp_path):
    wl = tmp_path / "wl.yaml"
    wl.write_text(
        "name: t\nkv_capacity_tokens: 1024\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.00001}\n"
        "types:\n  - {name: a, prefill: 12, decode: 3, rate_per_s: 400}\n"
    )
    out = tmp_path / "run"
    assert main(["run", str(wl), "--scheduler", "sarathi", "--model", "tiny-llama", "--device", "cpu", "--requests", "6", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["completed"] == 6 and summary["device"] == "cpu" and "torch" in summary["versions"]
    steps = json.loads((out / "steps.json").read_text())
    assert len(steps) == summary["num_steps"] and all(s["measured_s"] > 0 for s in steps)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--kv-tokens", "16"], "cannot hold one request"),
        (["--device", "cuda"], "no CUDA device"),
    ],
)
def test_cli_run_bad_input_exits_2(tmp_path, capsys, extra, needle):
    if "cuda" in extra and torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    wl = tmp_path / "wl.yaml"
    wl.write_text("name: t\nkv_capacity_tokens: 1024\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.00001}\ntypes:\n  - {name: a, prefill: 12, decode: 30, rate_per_s: 4}\n")
    args = ["run", str(wl), "--scheduler", "sarathi", "--model", "tiny-llama", "--device", "cpu", "--requests", "3"] + extra
    if "cuda" in extra:
        args.remove("cpu")
        args.remove("--device")
    assert main(args) == 2
    assert needle in capsys.readouterr().err


def test_policy_for_other_memory_size_is_rejected(tmp_path, capsys):
    wl = tmp_path / "wl.yaml"
    wl.write_text("name: t\nkv_capacity_tokens: 1024\nbatch_time: {kind: affine, d0_s: 0.01, d1_s_per_token: 0.00001}\ntypes:\n  - {name: a, prefill: 12, decode: 3, rate_per_s: 4}\n")
    policy = tmp_path / "p.json"
    assert main(["solve", str(wl), "--out", str(policy)]) == 0
    capsys.readouterr()
    code = main(["run", str(wl), "--policy", str(policy), "--model", "tiny-llama", "--device", "cpu", "--requests", "3", "--kv-tokens", "2048"])
    err = capsys.readouterr().err
    assert code == 2
    assert "C is 1024 tokens in the policy, 2048 in the run" in err, err


class _Stuck(TinyChunkedScheduler):
    def schedule(self, now_s):
        from runtime.schedulers.base import Batch

        return Batch()


class _Cheater(TinyChunkedScheduler):
    def schedule(self, now_s):
        batch = super().schedule(now_s)
        self.kv.free_blocks -= 100  # a bug: memory taken without `grow`
        return batch


def test_engine_shares_the_deadlock_and_memory_errors(tiny):
    from runtime.executor import MemoryOverflowError, SchedulerDeadlockError

    cfg, _, runner = tiny
    engine = _engine(cfg, runner, 16)
    with pytest.raises(SchedulerDeadlockError, match="idle with unfinished requests"):
        engine.run(_Stuck(KVBlockManager(16 * BLOCK, BLOCK, track_block_ids=True)), [Request(0, 0.0, 5, 2)])
    with pytest.raises(MemoryOverflowError):
        engine.run(_Cheater(KVBlockManager(16 * BLOCK, BLOCK, track_block_ids=True)), [Request(0, 0.0, 5, 2)])


def test_engine_peak_kv_is_held_while_the_step_runs(tiny):
    cfg, _, runner = tiny
    engine = _engine(cfg, runner, 16)
    sched = TinyChunkedScheduler(KVBlockManager(16 * BLOCK, BLOCK, track_block_ids=True), token_budget=64, max_seqs=1)
    req = Request(0, 0.0, BLOCK, 1)  # one block of prompt; the decode needs a second, then frees both
    result = engine.run(sched, [req])
    assert req.finished
    assert result.steps.kv_used_tokens == [BLOCK, 2 * BLOCK]
    assert result.peak_kv_tokens == 2 * BLOCK
    assert all(h is not None and h >= 0 for h in result.steps.host_s) and len(result.steps.graph) == 2
