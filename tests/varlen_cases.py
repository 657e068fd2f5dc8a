"""The variable-length paged attention kernel against its torch oracle on one random step.

Imported by tests/test_gpu_varlen_attention.py: on CUDA in-process, on CPU in a subprocess under
Triton's interpreter (`TRITON_INTERPRET=1` must be set before the kernel module is imported).
"""

from __future__ import annotations

import os

import torch

# (num_new, context_tokens): a fresh prompt, decodes with and without a prefix, a chunk spanning
# two 64-row tiles on a prefix that ends mid-block, a chunk of exactly one tile on a prefix of
# exactly one key tile (64), a one-token prefill, a short chunk after a long prefix
CASES = ((5, 0), (1, 7), (70, 9), (64, 64), (1, 0), (3, 130))
# (block_m, block_n, split, heavy_first, heads_inner) launches checked; None = the shipped tiling.
# The split ones cover unmasked key tiles before the diagonal (block_n < block_m: the 70-row
# chunk's second tile sees two whole 32-key tiles), whole prefix tiles (64 and 130 cached), and a
# key tile wider than the query tile (no tile is wholly before the diagonal); heads_inner the 1-D
# grid whose programs decode their head from the flat program id
TILINGS = ((64, None, None, None, None), (16, None, None, None, None), (64, 32, True, True, True), (64, 64, True, False, None),
           (16, 128, True, True, True))


def _interpreter_shim() -> None:
    """Triton 3.6's interpreter holds scalars as 1-element arrays and calls int() on them, which
    numpy ≥ 2.4 refuses; read the element instead (interpreter runs only)."""
    import triton.runtime.interpreter as interp

    original = getattr(interp, "_patch_lang_tensor", None)
    if original is None:  # another Triton version: its interpreter is used as it is
        return

    def patched(tensor, scope):
        original(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.reshape(-1)[0]))

    interp._patch_lang_tensor = patched


def random_step(device, dtype, *, seed: int, heads=4, kv_heads=2, head_dim=16, block_size=4, num_blocks=128, pad_rows=3):
    """Pool, fresh q/k/v rows (the chunk's K/V also written into the pool, as the model does) and
    the sequences `[(row_start, num_new, ctx, table)]` on scattered blocks; `pad_rows` rows at the
    end belong to no sequence."""
    g = torch.Generator().manual_seed(seed)
    kc = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g)
    vc = torch.randn(num_blocks, block_size, kv_heads, head_dim, generator=g)
    total = sum(n for n, _ in CASES) + pad_rows
    q = torch.randn(total, heads, head_dim, generator=g)
    k = torch.randn(total, kv_heads, head_dim, generator=g)
    v = torch.randn(total, kv_heads, head_dim, generator=g)
    free = torch.randperm(num_blocks, generator=g).tolist()
    seqs, row = [], 0
    for n, ctx in CASES:
        table = [free.pop() for _ in range(-(-(n + ctx) // block_size))]
        for i in range(n):
            p = ctx + i
            kc[table[p // block_size], p % block_size] = k[row + i]
            vc[table[p // block_size], p % block_size] = v[row + i]
        seqs.append((row, n, ctx, table))
        row += n
    to = lambda x: x.to(device=device, dtype=dtype)  # noqa: E731
    return to(q), to(k), to(v), to(kc), to(vc), seqs, total - pad_rows


def check(device: str, dtype: torch.dtype, *, seed: int, tol: float) -> list[str]:
    """Returns the failures (empty when the kernel agrees with the oracle everywhere)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        _interpreter_shim()
    from runtime.gpu.attention import PREFILL_BLOCK_M, pack_varlen, varlen_attention_reference
    from runtime.gpu.kernels.varlen_attention_triton import varlen_paged_attention

    q, k, v, kc, vc, seqs, live = random_step(device, dtype, seed=seed)
    scale = q.shape[-1] ** -0.5
    ref = varlen_attention_reference(q.double(), k.double(), v.double(), kc.double(), vc.double(), pack_varlen(seqs, PREFILL_BLOCK_M, device), scale, torch.zeros_like(q, dtype=torch.float64))
    failures = []
    for block_m, block_n, split, heavy, heads_inner in (TILINGS if seed == 0 else TILINGS[:2]):  # the interpreter is slow: other tilings once
        batch = pack_varlen(seqs, block_m, device, heavy_first=heavy)
        name = f"block_m {block_m} block_n {block_n} split {split} heavy_first {heavy} heads_inner {heads_inner}"
        for grid in (batch.grid_programs, 2):  # every tile its program; a persistent grid smaller than the tiles
            out = torch.full_like(q, float("nan"))
            varlen_paged_attention(q, k, v, kc, vc, out, batch.seq_meta, batch.block_tables, batch.tile_map, batch.num_tiles, scale,
                                   grid_programs=grid, block_m=block_m, block_n=block_n, split=split, heads_inner=heads_inner)
            err = ((out[:live].double() - ref[:live]).norm() / ref[:live].norm()).item()
            if not err < tol:
                worst = max(range(len(seqs)), key=lambda s: (out[seqs[s][0]:seqs[s][0] + seqs[s][1]].double() - ref[seqs[s][0]:seqs[s][0] + seqs[s][1]]).abs().nan_to_num(1e9).max().item())
                failures.append(f"{name} grid {grid}: relative error {err:.2e} (worst sequence {CASES[worst]})")
            if not out[live:].isnan().all():
                failures.append(f"{name} grid {grid}: rows outside every sequence were written")
    return failures


if __name__ == "__main__":
    import sys

    problems = check("cpu", torch.float32, seed=int(sys.argv[1]), tol=1e-5)
    print("\n".join(problems) or "ok")
    sys.exit(1 if problems else 0)
