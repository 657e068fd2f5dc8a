"""A Llama forward in plain torch over the paged KV pool (RMSNorm, RoPE, GQA, SwiGLU).

Weights are taken from a transformers `LlamaForCausalLM` (random init from a `LlamaConfig`, or a
local safetensors checkpoint: `runtime.gpu.checkpoint`), with q/k/v and gate/up fused into one matrix
each so a step runs two GEMMs fewer per layer. Numerics follow transformers' Llama: RMSNorm in
fp32 then cast, RoPE tables in fp32 cast to the model dtype, softmax scale head_dim^-1/2.

`forward(step)` runs one packed mixed batch (see `runtime.gpu.attention`) and returns the logits of
the rows that sample a token.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from runtime.gpu.attention import PREFILL_BLOCK_M, PrefillSeq, VarlenBatch, default_scale, paged_decode_attention, prefill_attention, varlen_from_prefills
from runtime.gpu.kv_pool import KVPool


@dataclass(slots=True)
class LayerWeights:
    input_norm: torch.Tensor  # [hidden]
    qkv: torch.Tensor  # [(heads + 2·kv_heads)·d, hidden]
    o: torch.Tensor  # [hidden, heads·d]
    post_norm: torch.Tensor  # [hidden]
    gate_up: torch.Tensor  # [2·intermediate, hidden]
    down: torch.Tensor  # [hidden, intermediate]


@dataclass(slots=True)
class StepInputs:
    """One packed step. Rows: prefill chunks first, then one row per decode sequence."""

    input_ids: torch.Tensor  # [T] token ids
    positions: torch.Tensor  # [T]
    slots: torch.Tensor  # [T] pool slot of each row's K/V: block·block_size + offset
    prefills: list[PrefillSeq]
    decode_block_tables: torch.Tensor | None  # [D, max_blocks] int32, or None when D = 0
    decode_context_lens: torch.Tensor | None  # [D] int32: tokens attended, the current one included
    sample_rows: torch.Tensor | None  # [S] rows whose logits are returned; None = every row
    num_decode_rows: int = 0
    # CUDA: the metadata of the variable-length attention launches (built from `prefills` when None);
    # `decode_varlen` set means decodes go through the variable-length kernel too (graphed mixed steps)
    prefill_varlen: VarlenBatch | None = None
    decode_varlen: VarlenBatch | None = None


class LlamaRunner:
    def __init__(self, config, layers: list[LayerWeights], embed: torch.Tensor, final_norm: torch.Tensor, lm_head: torch.Tensor, inv_freq: torch.Tensor, rope_scaling: float = 1.0):
        self.config = config
        self.layers = layers
        self.embed = embed  # [vocab, hidden]
        self.final_norm = final_norm
        self.lm_head = lm_head  # [vocab, hidden]
        self.num_heads = config.num_attention_heads
        self.kv_heads = config.num_key_value_heads or config.num_attention_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.eps = config.rms_norm_eps
        self.scale = default_scale(self.head_dim)
        self.dtype = embed.dtype
        self.device = embed.device
        self.max_positions = config.max_position_embeddings
        positions = torch.arange(self.max_positions, device=self.device, dtype=torch.float32)
        freqs = positions[:, None] * inv_freq.to(self.device, torch.float32)[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [max_pos, d]
        self.cos = (emb.cos() * rope_scaling).to(self.dtype).contiguous()
        self.sin = (emb.sin() * rope_scaling).to(self.dtype).contiguous()
        # CUDA runs the fused Triton kernels (runtime.gpu.kernels.fused_ops); CPU keeps the plain torch path
        half = self.head_dim // 2
        self.use_fused_ops = self.device.type == "cuda" and half > 0 and half & (half - 1) == 0  # tl.arange needs 2^k
        # steps of ≤ 4 rows may stream the weights through runtime.gpu.kernels.gemv_triton (norm, SiLU and the
        # residual add folded in); "auto" times it against cuBLAS on first use, "on"/"off" force it
        self.decode_gemv_mode = os.environ.get("FLUIDSCHED_DECODE_GEMV", "auto")
        if self.decode_gemv_mode not in ("auto", "on", "off"):
            raise ValueError(f"FLUIDSCHED_DECODE_GEMV must be auto, on or off, got {self.decode_gemv_mode!r}")
        self.gemv_plan = None  # runtime.gpu.gemv_plan.GemvPlan once decided

    # --- construction ----------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf_model) -> "LlamaRunner":
        """Copy (fusing) the weights of a transformers LlamaForCausalLM; the caller may drop it."""
        inner = hf_model.model
        layers = []
        with torch.no_grad():
            for layer in inner.layers:
                attn, mlp = layer.self_attn, layer.mlp
                layers.append(
                    LayerWeights(
                        input_norm=layer.input_layernorm.weight.detach().clone(),
                        qkv=torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).contiguous(),
                        o=attn.o_proj.weight.detach().clone(),
                        post_norm=layer.post_attention_layernorm.weight.detach().clone(),
                        gate_up=torch.cat([mlp.gate_proj.weight, mlp.up_proj.weight]).contiguous(),
                        down=mlp.down_proj.weight.detach().clone(),
                    )
                )
            rotary = inner.rotary_emb
            return cls(
                hf_model.config,
                layers,
                inner.embed_tokens.weight.detach().clone(),
                inner.norm.weight.detach().clone(),
                hf_model.lm_head.weight.detach().clone(),
                rotary.inv_freq.detach().clone(),
                float(getattr(rotary, "attention_scaling", 1.0)),
            )

    @property
    def weight_bytes(self) -> int:
        tensors = [self.embed, self.final_norm, self.lm_head]
        for w in self.layers:
            tensors += [w.input_norm, w.qkv, w.o, w.post_norm, w.gate_up, w.down]
        return sum(t.numel() * t.element_size() for t in tensors)

    # --- pieces ----------------------------------------------------------------------------
    def _rms_norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return weight * xf.to(x.dtype)

    def _rope(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x: [T, heads, d]; cos, sin: [T, 1, d]."""
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attention(self, layer_index: int, x: torch.Tensor, step: StepInputs, pool: KVPool, cos, sin) -> torch.Tensor:
        T = x.shape[0]
        H, KV, d = self.num_heads, self.kv_heads, self.head_dim
        qkv = F.linear(x, self.layers[layer_index].qkv)  # [T, (H + 2KV)·d]
        q, k, v = qkv.split([H * d, KV * d, KV * d], dim=-1)
        q = self._rope(q.view(T, H, d), cos, sin)  # [T, H, d]
        k = self._rope(k.view(T, KV, d), cos, sin)  # [T, KV, d]
        v = v.view(T, KV, d)
        pool.write(layer_index, k, v, step.slots)
        k_cache, v_cache = pool.layer(layer_index)  # [blocks, block_size, KV, d]
        attn = self._attention_core(q, k, v, step, k_cache, v_cache)  # [T, H, d]
        return F.linear(attn.reshape(T, H * d), self.layers[layer_index].o)

    def _attention_core(self, q, k, v, step: StepInputs, k_cache, v_cache) -> torch.Tensor:
        """q: [T, H, d] rotated; k, v: [T, KV, d] of this step (already in the pool). Returns [T, H, d]."""
        T = q.shape[0]
        if q.is_cuda and (step.prefills or step.prefill_varlen is not None or step.decode_varlen is not None):
            return self._attention_varlen(q, k, v, step, k_cache, v_cache)
        outs = []
        for seq in step.prefills:
            rows = slice(seq.row_start, seq.row_start + seq.num_new_tokens)
            outs.append(prefill_attention(q[rows], k[rows], v[rows], seq, k_cache, v_cache, self.scale))
        if step.num_decode_rows:
            qd = q[T - step.num_decode_rows :]
            outs.append(paged_decode_attention(qd, k_cache, v_cache, step.decode_block_tables, step.decode_context_lens, self.scale))
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)

    def _attention_varlen(self, q, k, v, step: StepInputs, k_cache, v_cache) -> torch.Tensor:
        """CUDA: all prefill chunks in one variable-length launch; decodes in a second one (graphed
        mixed steps) or in the paged decode kernel. Rows outside every sequence (a graph's padding)
        are left unwritten."""
        from runtime.gpu.kernels.attention_triton import paged_decode_triton
        from runtime.gpu.kernels.varlen_attention_triton import varlen_paged_attention

        T = q.shape[0]
        out = torch.empty((T, self.num_heads, self.head_dim), dtype=q.dtype, device=q.device)
        if step.prefill_varlen is None and step.prefills:
            step.prefill_varlen = varlen_from_prefills(step.prefills, PREFILL_BLOCK_M, q.device)  # once, reused by every layer
        for batch in (step.prefill_varlen, step.decode_varlen):
            if batch is not None:
                varlen_paged_attention(
                    q, k, v, k_cache, v_cache, out, batch.seq_meta, batch.block_tables, batch.tile_map, batch.num_tiles, self.scale,
                    grid_programs=batch.grid_programs, block_m=batch.block_m,
                )
        if step.decode_varlen is None and step.num_decode_rows:
            D = step.num_decode_rows
            paged_decode_triton(q[T - D :], k_cache, v_cache, step.decode_block_tables, step.decode_context_lens, self.scale, out=out[T - D :])
        return out

    def _forward_fused(self, step: StepInputs, pool: KVPool) -> torch.Tensor:
        """CUDA: per layer add+RMSNorm, QKV GEMM, RoPE+KV write, attention, O GEMM, add+RMSNorm,
        gate/up GEMM, SiLU·mul, down GEMM (runtime.gpu.kernels.fused_ops). Same numerics as `forward`'s torch path."""
        from runtime.gpu.kernels.fused_ops import add_rms_norm, rope_kv_write, silu_mul

        H, KV, d = self.num_heads, self.kv_heads, self.head_dim
        residual = F.embedding(step.input_ids, self.embed)  # [T, hidden], updated in place
        T = residual.shape[0]
        plan = self._decode_gemv_plan(T)
        if plan is not None:
            return self._forward_gemv(step, pool, residual, plan)
        x = add_rms_norm(residual, None, self.layers[0].input_norm, self.eps)
        for i, w in enumerate(self.layers):
            k_cache, v_cache = pool.layer(i)
            qkv = F.linear(x, w.qkv)
            q, k, v = rope_kv_write(qkv, self.cos, self.sin, step.positions, step.slots, k_cache, v_cache, H, KV)
            attn = self._attention_core(q, k, v, step, k_cache, v_cache)
            x = add_rms_norm(residual, F.linear(attn.reshape(T, H * d), w.o), w.post_norm, self.eps)
            mlp = F.linear(silu_mul(F.linear(x, w.gate_up)), w.down)
            next_norm = self.layers[i + 1].input_norm if i + 1 < len(self.layers) else self.final_norm
            x = add_rms_norm(residual, mlp, next_norm, self.eps)
        if step.sample_rows is not None:
            x = x.index_select(0, step.sample_rows)
        return F.linear(x, self.lm_head).float()

    def _decode_gemv_plan(self, rows: int):
        """The GEMV plan when this step should use it, else None (decided once, never during capture)."""
        from runtime.gpu.gemv_plan import GemvPlan
        from runtime.gpu.kernels.gemv_triton import MAX_ROWS

        if rows == 0 or rows > MAX_ROWS or self.decode_gemv_mode == "off" or self.head_dim < 16:
            return None  # (the fused RoPE epilogue works one head per tile: ≥ 16 wide, a power of two)
        if self.gemv_plan is None:
            if self.decode_gemv_mode == "on":
                self.gemv_plan = GemvPlan(enabled=True)
            elif torch.cuda.is_current_stream_capturing():
                return None  # timing inside a capture is impossible; the warm-up before it decides
            else:
                self.gemv_plan = GemvPlan.choose(self.layers, self.eps, head=(self.lm_head, self.final_norm), heads=(self.num_heads, self.kv_heads, self.head_dim))
        return self.gemv_plan if self.gemv_plan.enabled else None

    def _forward_gemv(self, step: StepInputs, pool: KVPool, residual: torch.Tensor, plan) -> torch.Tensor:
        """≤ 4 rows: per layer RMSNorm+QKV GEMV+RoPE+KV write, attention, O GEMV adding into the
        residual, RMSNorm+gate/up GEMV, SiLU·mul+down GEMV adding into the residual, and at the end
        RMSNorm+LM-head GEMV (runtime.gpu.kernels.gemv_triton; 5 kernels a layer with the split decode
        attention, against 11). Same function as `_forward_fused`, bf16 rounding aside."""
        from runtime.gpu.kernels.gemv_triton import DEFAULT_CONFIG, RopeKV, gemv

        H, KV, d = self.num_heads, self.kv_heads, self.head_dim
        T = residual.shape[0]
        cfg = {name: plan.configs.get(name, DEFAULT_CONFIG) for name in ("qkv", "o", "gate_up", "down", "lm_head")}
        for i, w in enumerate(self.layers):
            k_cache, v_cache = pool.layer(i)
            rope = RopeKV(self.cos, self.sin, step.positions, step.slots, k_cache, v_cache, H, KV)
            qkv = gemv(residual, w.qkv, norm_weight=w.input_norm, eps=self.eps, config=cfg["qkv"], rope=rope)
            q, k, v = qkv.split([H * d, KV * d, KV * d], dim=-1)  # q and k rotated; k and v already in the pool
            attn = self._attention_core(q.view(T, H, d), k.view(T, KV, d), v.view(T, KV, d), step, k_cache, v_cache)
            gemv(attn.reshape(T, H * d).contiguous(), w.o, add_to=residual, config=cfg["o"])
            gate_up = gemv(residual, w.gate_up, norm_weight=w.post_norm, eps=self.eps, config=cfg["gate_up"])
            gemv(gate_up, w.down, silu=True, add_to=residual, config=cfg["down"])
        if step.sample_rows is not None:
            residual = residual.index_select(0, step.sample_rows)
        return gemv(residual, self.lm_head, norm_weight=self.final_norm, eps=self.eps, config=cfg["lm_head"]).float()

    def _mlp(self, layer_index: int, x: torch.Tensor) -> torch.Tensor:
        gate, up = F.linear(x, self.layers[layer_index].gate_up).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, self.layers[layer_index].down)

    # --- the forward -----------------------------------------------------------------------
    @torch.inference_mode()
    def forward(self, step: StepInputs, pool: KVPool) -> torch.Tensor:
        """Returns fp32 logits [S, vocab] of `step.sample_rows` (every row when None)."""
        if self.use_fused_ops:
            return self._forward_fused(step, pool)
        h = F.embedding(step.input_ids, self.embed)  # [T, hidden]
        cos = self.cos.index_select(0, step.positions)[:, None, :]  # [T, 1, d]
        sin = self.sin.index_select(0, step.positions)[:, None, :]
        for i, w in enumerate(self.layers):
            h = h + self._attention(i, self._rms_norm(h, w.input_norm), step, pool, cos, sin)
            h = h + self._mlp(i, self._rms_norm(h, w.post_norm))
        if step.sample_rows is not None:
            h = h.index_select(0, step.sample_rows)
        return F.linear(self._rms_norm(h, self.final_norm), self.lm_head).float()
