"""Shapes of the Llama-architecture models the toolkit knows by name (no weights, no torch).

Used by `fluid/` to size the KV cache from GPU memory (KV bytes per token =
2 · layers · kv_heads · head_dim · dtype bytes) and by the GPU runtime to build a `LlamaConfig`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from fluid.errors import InputError


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    num_layers: int
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_kv_heads: int
    vocab_size: int
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    dtype_bytes: int = 2  # bf16

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def kv_bytes_per_token(self) -> int:
        return 2 * self.num_layers * self.num_kv_heads * self.head_dim * self.dtype_bytes

    @property
    def param_count(self) -> int:
        h, f, v, L = self.hidden_size, self.intermediate_size, self.vocab_size, self.num_layers
        kv = self.num_kv_heads * self.head_dim
        per_layer = h * h * 2 + h * kv * 2 + 3 * h * f + 2 * h  # q,o; k,v; gate,up,down; 2 norms
        return L * per_layer + 2 * v * h + h  # embeddings, lm head (untied), final norm

    @property
    def weight_bytes(self) -> int:
        return self.param_count * self.dtype_bytes

    def to_dict(self) -> dict:
        return asdict(self)


MODEL_SPECS: dict[str, ModelSpec] = {
    "llama-2-7b": ModelSpec("llama-2-7b", 32, 4096, 11008, 32, 32, 32000),
    "llama-2-13b": ModelSpec("llama-2-13b", 40, 5120, 13824, 40, 40, 32000),
    "llama-3-8b": ModelSpec("llama-3-8b", 32, 4096, 14336, 32, 8, 128256, 8192, 500000.0),
    # a few-MB model of the same architecture, for CPU tests and CI
    "tiny-llama": ModelSpec("tiny-llama", 2, 64, 128, 4, 2, 256, 2048),
}


def model_spec(name: str) -> ModelSpec:
    try:
        return MODEL_SPECS[name]
    except KeyError:
        raise InputError(f"unknown model {name!r}; known models: {', '.join(MODEL_SPECS)}", field="model") from None
