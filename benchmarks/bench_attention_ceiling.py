"""How far the variable-length prefill kernel is from the fastest attention torch ships, per step shape.

    PYTHONPATH=. python benchmarks/bench_attention_ceiling.py --out docs/bench-attention-ceiling-h200.json

One layer of Llama-2-7B attention (32 heads of 128, bf16), CUDA events, median of 20, for the step
shapes of the flatness benchmark (`gpu_steps.py`): prompts with and without a cached prefix
of 256 tokens, 1 to 32 sequences. Beside our kernel (`varlen_paged_attention`, the shipped tiling,
prefix read in place from a pool of 16-token blocks):
- `torch.nn.attention.varlen.varlen_attn` over contiguous K/V where no sequence has a prefix,
  and over the paged pool (`block_table`, `seqused_k`) where this torch has them;
- `scaled_dot_product_attention(is_causal=True)` for a single prompt with no prefix (one dense
  causal problem: the flash kernel's best case, a ceiling rather than an alternative).
- our kernel compiled with its q / K / V / output row strides unspecialized, as it shipped before
  (`ours_row_strides_unspecialized`): the A/B of that decorator argument.
Each result is checked against ours (relative error of the output). Attention FLOPs count the
causal pairs only: 4 · heads · head_dim · Σ (n·c + n(n+1)/2) for n new tokens after c cached.
"""

from __future__ import annotations

import argparse
import inspect
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CASES = (("1x2048", [(2048, 0)]), ("4x512", [(512, 0)] * 4), ("8x256", [(256, 0)] * 8), ("32x64", [(64, 0)] * 32),
         ("1x2048 after 256", [(2048, 256)]), ("8x256 after 256", [(256, 256)] * 8), ("1x512 after 256", [(512, 256)]),
         ("32x16 after 256", [(16, 256)] * 32))
HEADS, HEAD_DIM, BLOCK = 32, 128, 16


def _rel(a, b) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# the decorator argument the kernel shipped with before its row strides were specialized
ROW_STRIDES_UNSPECIALIZED = ["stride_table_s", "stride_q_t", "stride_kn_t", "stride_vn_t", "stride_o_t"]
_UNSPECIALIZED = None


def _unspecialized_launch(launch):
    """`launch` (a call of `varlen_paged_attention`) with the kernel compiled as it shipped before:
    the A/B of that one decorator argument, through the same launcher and on the same inputs."""
    import triton

    from runtime.gpu.kernels import varlen_attention_triton as vk

    global _UNSPECIALIZED
    if _UNSPECIALIZED is None:
        _UNSPECIALIZED = triton.jit(vk._varlen_paged_kernel.fn, do_not_specialize=ROW_STRIDES_UNSPECIALIZED)
    shipped, vk._varlen_paged_kernel = vk._varlen_paged_kernel, _UNSPECIALIZED
    try:
        return launch()
    finally:
        vk._varlen_paged_kernel = shipped


def run_case(spec, varlen, repeats: int) -> dict:
    import torch

    from runtime.gpu.attention import PREFILL_BLOCK_M, pack_varlen
    from runtime.gpu.kernels.varlen_attention_triton import varlen_paged_attention
    from runtime.gpu.step_timer import cuda_event_time_s

    total = sum(n for n, _ in spec)
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(total, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    nblocks = sum(-(-(n + c) // BLOCK) for n, c in spec) + 1
    kc, vc = (torch.randn(nblocks, BLOCK, HEADS, HEAD_DIM, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(2))
    width = max(-(-(n + c) // BLOCK) for n, c in spec)
    table = torch.zeros(len(spec), width, dtype=torch.int32)
    seqs, row, nxt = [], 0, 0
    for i, (n, c) in enumerate(spec):
        ids = list(range(nxt, nxt + -(-(n + c) // BLOCK)))
        table[i, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
        pos = torch.arange(c, c + n)  # the chunk's own K/V also sit in the pool, as the engine writes them
        blk, off = torch.tensor(ids)[pos // BLOCK].cuda(), (pos % BLOCK).cuda()
        kc[blk, off], vc[blk, off] = k[row : row + n], v[row : row + n]
        seqs.append((row, n, c, ids))
        row, nxt = row + n, nxt + len(ids)
    flops = 4 * HEADS * HEAD_DIM * sum(n * c + n * (n + 1) // 2 for n, c in spec)
    scale = HEAD_DIM**-0.5
    batch = pack_varlen(seqs, PREFILL_BLOCK_M, "cuda")
    ours = torch.empty_like(q)

    def ours_launch(out=ours):
        return varlen_paged_attention(q, k, v, kc, vc, out, batch.seq_meta, batch.block_tables, batch.tile_map, batch.num_tiles,
                                      scale, grid_programs=batch.grid_programs, block_m=PREFILL_BLOCK_M)

    out = {"sequences": len(spec), "new_tokens": total, "prefix_per_seq": spec[0][1], "attention_flop": flops}
    t = cuda_event_time_s(ours_launch, repeats=repeats)
    out["ours"] = {"time_s": t, "tflop_per_s": flops / t / 1e12}
    unspecialized_out = torch.empty_like(q)
    candidates = {"ours_row_strides_unspecialized": lambda: _unspecialized_launch(lambda: ours_launch(unspecialized_out))}
    if varlen is not None:
        lengths = [n for n, _ in spec]
        cu_q = torch.tensor([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))], dtype=torch.int32, device="cuda")
        if all(c == 0 for _, c in spec):
            candidates["varlen_attn_contiguous"] = lambda: varlen.varlen_attn(q, k, v, cu_q, cu_q, max(lengths), max(lengths),
                                                                               window_size=(-1, 0), scale=scale)
        if "block_table" in inspect.signature(varlen.varlen_attn).parameters:
            used = torch.tensor([n + c for n, c in spec], dtype=torch.int32, device="cuda")
            bt = table.cuda()
            candidates["varlen_attn_paged"] = lambda: varlen.varlen_attn(q, kc, vc, cu_q, None, max(lengths), max(n + c for n, c in spec),
                                                                          window_size=(-1, 0), scale=scale, seqused_k=used, block_table=bt)
    if len(spec) == 1 and spec[0][1] == 0:
        qq, kk, vv = (x.transpose(0, 1).unsqueeze(0) for x in (q, k, v))
        candidates["sdpa_causal_dense"] = lambda: torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
    for name, fn in candidates.items():
        try:
            result = fn()
            result = result[0].transpose(0, 1) if name == "sdpa_causal_dense" else result
            t = cuda_event_time_s(fn, repeats=repeats)
            out[name] = {"time_s": t, "tflop_per_s": flops / t / 1e12, "rel_err_vs_ours": _rel(result, ours), "vs_ours": out["ours"]["time_s"] / t}
        except Exception as err:  # noqa: BLE001 - an unsupported path is a result here
            out[name] = {"error": repr(err)[:300]}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="docs/bench-attention-ceiling.json")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args()
    import torch

    from runtime.gpu.host_info import describe_host, versions

    try:
        from torch.nn.attention import varlen
        signature = str(inspect.signature(varlen.varlen_attn))
    except ImportError as err:
        varlen, signature = None, f"not in this torch ({err})"
    res = {"device": torch.cuda.get_device_name(), "versions": versions(), "host": describe_host(),
           "command": "PYTHONPATH=. python benchmarks/bench_attention_ceiling.py " + " ".join(sys.argv[1:]),
           "varlen_attn_signature": signature, "cases": {}}
    for label, spec in CASES:
        res["cases"][label] = case = run_case(spec, varlen, args.repeats)
        cells = "  ".join(f"{k} {1e6 * v['time_s']:.0f} us ({v['tflop_per_s']:.0f} TFLOP/s)" if "time_s" in v else f"{k} failed"
                          for k, v in case.items() if isinstance(v, dict))
        print(f"{label:18s} {cells}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
