"""Weights for the runner: a transformers LlamaForCausalLM with random init or from a local folder.

Random weights (the default) cost exactly what real ones do and need no download. A checkpoint
folder must hold `config.json` and safetensors (`model.safetensors`, or shards listed by
`model.safetensors.index.json`); every problem is an InputError naming the file and what to do,
raised before any weights reach the device.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from fluid.errors import InputError

# the config fields that fix the weights' shapes: a checkpoint must agree with --model on each
SHAPE_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size")


def build_random_model(config, *, dtype: torch.dtype, device: str | torch.device, seed: int = 0):
    """A LlamaForCausalLM with transformers' own random init, built directly on `device` in `dtype`."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval()


def _safetensors_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError):
            raise InputError("not a safetensors index (needs a 'weight_map' object); re-save the checkpoint", source=str(index)) from None
        files = [folder / name for name in sorted(set(weight_map.values()))]
        missing = [f.name for f in files if not f.is_file()]
        if missing:
            raise InputError(f"shards listed in the index are missing: {missing}; copy them into the folder", source=str(index))
        return files
    single = folder / "model.safetensors"
    if single.is_file():
        return [single]
    raise InputError(f"no model.safetensors or model.safetensors.index.json in {folder}; save the model with save_pretrained(safe_serialization=True)", field="checkpoint")


def checkpoint_config(folder: str | Path):
    from runtime.gpu.model_presets import load_config_json

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"checkpoint folder {folder} does not exist", field="checkpoint")
    if not (folder / "config.json").is_file():
        raise InputError(f"checkpoint folder {folder} has no config.json; save it with save_pretrained", field="checkpoint")
    return load_config_json(folder / "config.json")


def check_config_agrees(checkpoint_cfg, model_cfg, folder: str | Path) -> None:
    for name in SHAPE_FIELDS:
        a, b = getattr(checkpoint_cfg, name, None), getattr(model_cfg, name, None)
        if a != b:
            raise InputError(
                f"checkpoint config has {name} = {a} but --model gives {b}; drop --model or pass the matching one",
                source=str(Path(folder) / "config.json"),
                field=name,
            )


def load_checkpoint_model(folder: str | Path, *, dtype: torch.dtype, device: str | torch.device, expected_config=None):
    """Load a local safetensors Llama checkpoint; checks files, config and tensor names/shapes first."""
    from safetensors import safe_open

    folder = Path(folder)
    config = checkpoint_config(folder)
    if expected_config is not None:
        check_config_agrees(config, expected_config, folder)
    files = _safetensors_files(folder)
    model = build_random_model(config, dtype=dtype, device="meta")
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if getattr(config, "tie_word_embeddings", False):
        expected.pop("lm_head.weight", None)
    found: dict[str, tuple[int, ...]] = {}
    for f in files:
        with safe_open(str(f), framework="pt") as handle:
            for key in handle.keys():
                found[key] = tuple(handle.get_slice(key).get_shape())
    missing = sorted(set(expected) - set(found))
    if missing:
        raise InputError(f"checkpoint lacks {len(missing)} tensors, e.g. {missing[:3]}; it does not match its config.json", source=str(folder))
    for key, shape in expected.items():
        if found[key] != shape:
            raise InputError(f"tensor {key} has shape {list(found[key])}, config.json implies {list(shape)}", source=str(folder))
    model = build_random_model(config, dtype=dtype, device=device)
    from safetensors.torch import load_file

    state = {}
    for f in files:
        state.update(load_file(str(f), device=str(device)))
    model.load_state_dict({k: v for k, v in state.items() if k in expected}, strict=False)
    if getattr(config, "tie_word_embeddings", False):
        model.tie_weights()
    return model.to(dtype).eval()
