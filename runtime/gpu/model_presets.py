"""Build a transformers `LlamaConfig` from a preset name or a config JSON (torch-free until used).

Presets come from `fluid.model_specs.MODEL_SPECS` so that the fluid model, the simulator and the
GPU runtime agree on one shape per name. A path to a `config.json` (as written by
`LlamaConfig.save_pretrained`) gives any other Llama-architecture shape.
"""

from __future__ import annotations

import json
from pathlib import Path

from fluid.errors import InputError
from fluid.model_specs import MODEL_SPECS, ModelSpec

_REQUIRED_CONFIG_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
)


def config_from_spec(spec: ModelSpec):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=spec.vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_attention_heads,
        num_key_value_heads=spec.num_kv_heads,
        max_position_embeddings=spec.max_position_embeddings,
        rope_theta=spec.rope_theta,
        rms_norm_eps=spec.rms_norm_eps,
        tie_word_embeddings=False,
    )


def load_config_json(path: str | Path):
    """A LlamaConfig from a JSON file, with a clear error for a missing file or field."""
    from transformers import LlamaConfig

    path = Path(path)
    if not path.is_file():
        raise InputError(f"model config file {path} does not exist; pass a preset name ({', '.join(MODEL_SPECS)}) or a LlamaConfig JSON", field="model")
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg} at line {err.lineno}); fix the file", source=str(path)) from None
    if not isinstance(raw, dict):
        raise InputError("a model config must be a JSON object", source=str(path))
    missing = [k for k in _REQUIRED_CONFIG_FIELDS if k not in raw]
    if missing:
        raise InputError(f"missing Llama config fields {missing}; write them or use a preset", source=str(path))
    model_type = raw.get("model_type", "llama")
    if model_type != "llama":
        raise InputError(f"model_type is {model_type!r}; only Llama-architecture models run here", source=str(path), field="model_type")
    raw.setdefault("tie_word_embeddings", False)
    return LlamaConfig(**{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")})


def resolve_model_config(model: str):
    """`model` is a preset name (`llama-2-7b`, ...) or a path to a LlamaConfig JSON."""
    if model in MODEL_SPECS:
        return config_from_spec(MODEL_SPECS[model])
    if model.endswith(".json") or Path(model).exists():
        return load_config_json(model)
    raise InputError(f"unknown model {model!r}; known presets: {', '.join(MODEL_SPECS)}, or a path to a LlamaConfig JSON", field="model")
