"""KV-cache capacity C (tokens) from GPU memory and a model's shape.

    C = ⌊(gpu_memory_gib · 2^30 · memory_fraction − weight bytes − reserved_gib · 2^30)
         / KV bytes per token⌋,
    KV bytes per token = 2 (K and V) · layers · kv_heads · head_dim · dtype bytes.

`memory_fraction` is the share of the GPU the server may use (vLLM's gpu_memory_utilization);
`reserved_gib` covers activations, CUDA graphs and the allocator's slack. `dtype_bytes` is the
KV cache's element size (2 for bf16/fp16, 1 for fp8); the weights keep the model's own dtype.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from fluid.numbers import check_number
from fluid.errors import InputError, check_keys, with_source
from fluid.model_specs import MODEL_SPECS, ModelSpec, model_spec

GIB = 2**30
KV_CAPACITY_KEYS = ("gpu_memory_gib", "memory_fraction", "model", "dtype_bytes", "reserved_gib")
_MODEL_REQUIRED = ("num_layers", "hidden_size", "intermediate_size", "num_attention_heads", "num_kv_heads", "vocab_size")


@dataclass(frozen=True, slots=True)
class MemoryCapacity:
    """How the KV capacity was derived, with every term in bytes."""

    usable_bytes: int
    weight_bytes: int
    reserved_bytes: int
    kv_bytes_per_token: int

    @property
    def kv_capacity_tokens(self) -> int:
        return (self.usable_bytes - self.weight_bytes - self.reserved_bytes) // self.kv_bytes_per_token


def memory_capacity(
    gpu_memory_gib: float,
    memory_fraction: float,
    model: ModelSpec,
    *,
    dtype_bytes: int | None = None,
    reserved_gib: float = 0.0,
) -> MemoryCapacity:
    """The capacity terms; raises InputError when the weights and reserve leave no room for KV."""
    usable = int(gpu_memory_gib * GIB * memory_fraction)
    reserved = int(reserved_gib * GIB)
    kv_dtype = model.dtype_bytes if dtype_bytes is None else dtype_bytes
    per_token = 2 * model.num_layers * model.num_kv_heads * model.head_dim * kv_dtype
    cap = MemoryCapacity(usable, model.weight_bytes, reserved, per_token)
    if cap.kv_capacity_tokens <= 0:
        raise InputError(
            f"no room for a KV cache: {gpu_memory_gib} GiB × {memory_fraction} = {usable / GIB:.2f} GiB usable, "
            f"but the weights of {model.name} need {model.weight_bytes / GIB:.2f} GiB"
            + (f" and {reserved_gib} GiB is reserved" if reserved else "")
            + "; use a larger GPU, a higher memory_fraction, a smaller model or less reserve",
            field="kv_capacity",
        )
    return cap


def kv_capacity_tokens_from_memory(
    gpu_memory_gib: float,
    memory_fraction: float,
    model: ModelSpec | str,
    *,
    dtype_bytes: int | None = None,
    reserved_gib: float = 0.0,
) -> int:
    """C in tokens; `model` is a ModelSpec or a name in `fluid.model_specs.MODEL_SPECS`."""
    spec = model_spec(model) if isinstance(model, str) else model
    return memory_capacity(gpu_memory_gib, memory_fraction, spec, dtype_bytes=dtype_bytes, reserved_gib=reserved_gib).kv_capacity_tokens


def _number(value, *, source, field, low: float, high: float | None, what: str) -> float:
    return float(check_number(value, field, minimum=low, strict_minimum=True, maximum=high, unit=f"({what})", source=source))


def _model_from(value, *, source, field) -> ModelSpec:
    if isinstance(value, str):
        try:
            return model_spec(value)
        except InputError as err:
            raise InputError(err.detail, source=source, field=field) from None
    allowed = tuple(f.name for f in fields(ModelSpec))
    check_keys(value, allowed=allowed, required=_MODEL_REQUIRED, source=source, field=field)
    for key in allowed:
        v = value.get(key)
        if key in ("name", "rope_theta", "rms_norm_eps") or v is None:
            continue
        check_number(v, f"{field}.{key}", integer=True, minimum=1, source=source)
    if value["hidden_size"] % value["num_attention_heads"]:
        raise InputError(
            f"hidden_size {value['hidden_size']} is not a multiple of num_attention_heads {value['num_attention_heads']}",
            source=source,
            field=f"{field}.hidden_size",
        )
    return ModelSpec(**{"name": "inline", **value})


def kv_capacity_from_dict(data, *, source: str | None, field: str = "kv_capacity") -> int:
    """C in tokens from a workload file's `kv_capacity` mapping:
    `{gpu_memory_gib, memory_fraction, model: NAME | {num_layers, ...}, dtype_bytes?, reserved_gib?}`.
    Known models: see `fluid.model_specs.MODEL_SPECS`."""
    check_keys(data, allowed=KV_CAPACITY_KEYS, required=("gpu_memory_gib", "memory_fraction", "model"), source=source, field=field)
    gib = _number(data["gpu_memory_gib"], source=source, field=f"{field}.gpu_memory_gib", low=0, high=None, what="GiB")
    fraction = _number(data["memory_fraction"], source=source, field=f"{field}.memory_fraction", low=0, high=1, what="share of GPU memory")
    reserved = data.get("reserved_gib", 0.0)
    check_number(reserved, f"{field}.reserved_gib", minimum=0, unit="of GiB", source=source)
    dtype_bytes = data.get("dtype_bytes")
    if dtype_bytes is not None and (isinstance(dtype_bytes, bool) or dtype_bytes not in (1, 2, 4)):
        raise InputError(f"must be 1 (fp8), 2 (bf16/fp16) or 4 (fp32), got {dtype_bytes!r}", source=source, field=f"{field}.dtype_bytes")
    model = _model_from(data["model"], source=source, field=f"{field}.model")
    try:
        return memory_capacity(gib, fraction, model, dtype_bytes=dtype_bytes, reserved_gib=float(reserved)).kv_capacity_tokens
    except InputError as err:
        raise with_source(err, source) from None


__all__ = ["MODEL_SPECS", "MemoryCapacity", "kv_capacity_from_dict", "kv_capacity_tokens_from_memory", "memory_capacity"]
