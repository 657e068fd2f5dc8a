"""Start-up of the real executor: device check, weights, warm-up, and the KV pool sized once.

Order matters for the error contract: every input check (device, model, checkpoint files and
config, KV budget) runs before weights touch the device, so a bad input costs no GPU time.
The pool holds `kv_tokens` when given; otherwise what free memory allows after the weights and a
warm-up forward at the largest batch shape (its activation peak is kept back, plus a margin for
the decode CUDA graphs and allocator fragmentation).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fluid.errors import InputError
from runtime.gpu.kv_pool import KVPool, PoolShape, blocks_that_fit

GRAPH_MARGIN_BYTES = 3 * 2**30  # decode graphs' private pool + fragmentation slack


@dataclass
class RuntimeInfo:
    device_name: str
    weight_bytes: int
    pool_bytes: int
    kv_capacity_tokens: int
    warmup_peak_bytes: int


def check_device(device: str) -> torch.device:
    if device not in ("cuda", "cpu"):
        raise InputError(f"device must be 'cuda' or 'cpu', got {device!r}", field="device")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda was asked but no CUDA device is visible (torch.cuda.is_available() is False); use --device cpu with a tiny model", field="device")
    return torch.device(device)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, "auto": torch.bfloat16 if device.type == "cuda" else torch.float32}
    if name not in table:
        raise InputError(f"dtype must be one of {sorted(table)}, got {name!r}", field="dtype")
    return table[name]


def model_and_checkpoint(model: str | None, checkpoint: str | None) -> tuple[str | None, str | None]:
    """`--model FOLDER` with a Hugging Face checkpoint folder: its config and, when it holds
    safetensors, its weights (as `--checkpoint FOLDER`); a folder with only config.json gives the
    shape with random weights. Other values pass through."""
    from pathlib import Path

    if not model or not Path(model).is_dir():
        return model, checkpoint
    folder = Path(model)
    if not (folder / "config.json").is_file():
        raise InputError(f"model folder {folder} has no config.json; give a Hugging Face checkpoint folder "
                         f"(saved with save_pretrained) or a preset name", field="model")
    has_weights = (folder / "model.safetensors").is_file() or (folder / "model.safetensors.index.json").is_file()
    if not has_weights:
        return str(folder / "config.json"), checkpoint
    if checkpoint and Path(checkpoint).resolve() != folder.resolve():
        raise InputError(f"--model {folder} is a checkpoint folder with weights, and --checkpoint names another "
                         f"({checkpoint}); give one of them", field="checkpoint")
    return None, str(folder)


def model_config(model: str | None, checkpoint: str | None):
    """The config to run: --model's, checked against the checkpoint's when both are given."""
    from runtime.gpu.checkpoint import check_config_agrees, checkpoint_config
    from runtime.gpu.model_presets import resolve_model_config

    cfg = resolve_model_config(model) if model else None
    if checkpoint:
        ckpt_cfg = checkpoint_config(checkpoint)
        if cfg is not None:
            check_config_agrees(ckpt_cfg, cfg, checkpoint)
        return ckpt_cfg
    return cfg if cfg is not None else resolve_model_config("llama-2-7b")


def kv_bytes_per_token(config, dtype: torch.dtype) -> int:
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = config.num_key_value_heads or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * torch.tensor([], dtype=dtype).element_size()


HOST_MEMORY_SHARE = 0.9  # of MemAvailable: what a CPU run may plan to use (the OS needs the rest)


def parameter_count(config) -> int:
    """Weights of a Llama config (embeddings, attention, MLP, norms, LM head unless tied)."""
    h, i, v = config.hidden_size, config.intermediate_size, config.vocab_size
    heads = config.num_attention_heads
    kv_heads = config.num_key_value_heads or heads
    head_dim = getattr(config, "head_dim", None) or h // heads
    per_layer = h * heads * head_dim * 2 + h * kv_heads * head_dim * 2 + 3 * h * i + 2 * h
    head = 0 if getattr(config, "tie_word_embeddings", False) else v * h
    return v * h + config.num_hidden_layers * per_layer + h + head


def available_host_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (Linux), else None (the check is then skipped)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def check_host_memory(config, dtype: torch.dtype, kv_tokens: int, *, model_name: str) -> None:
    """On CPU, refuse a model + KV pool that cannot fit in host memory, before building it
    (an allocator failure comes only after minutes of random init, as a traceback)."""
    available = available_host_bytes()
    if available is None:
        return
    element = torch.tensor([], dtype=dtype).element_size()
    need = parameter_count(config) * element + kv_tokens * kv_bytes_per_token(config, dtype)
    if need > HOST_MEMORY_SHARE * available:
        raise InputError(
            f"{model_name} in {str(dtype).replace('torch.', '')} with a KV pool of {kv_tokens} tokens needs "
            f"{need / 2**30:.1f} GiB of host memory but {available / 2**30:.1f} GiB are available; on CPU use a small model "
            f"(--model tiny-llama) or fewer --kv-tokens",
            field="model",
        )


def load_runner(config, checkpoint: str | None, *, dtype: torch.dtype, device: torch.device, seed: int = 0):
    from runtime.gpu.checkpoint import build_random_model, load_checkpoint_model
    from runtime.gpu.model import LlamaRunner

    if checkpoint:
        hf = load_checkpoint_model(checkpoint, dtype=dtype, device=device, expected_config=config)
    else:
        hf = build_random_model(config, dtype=dtype, device=device, seed=seed)
    runner = LlamaRunner.from_hf(hf)
    del hf
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return runner


def _warmup_peak_bytes(runner, block_size: int, max_batch_tokens: int) -> int:
    """Run one prefill of `max_batch_tokens` (split at the position limit) and return its activation peak."""
    from runtime.gpu.attention import PrefillSeq
    from runtime.gpu.model import StepInputs

    seq_len = min(max_batch_tokens, runner.max_positions)
    seqs = -(-max_batch_tokens // seq_len)
    tokens = seqs * seq_len
    pool = KVPool(PoolShape(len(runner.layers), -(-tokens // block_size), block_size, runner.kv_heads, runner.head_dim, runner.embed.element_size()), dtype=runner.dtype, device=runner.device)
    dev = runner.device
    step = StepInputs(
        torch.zeros(tokens, dtype=torch.int64, device=dev),
        torch.arange(seq_len, device=dev).repeat(seqs),
        torch.arange(tokens, device=dev),
        [PrefillSeq(i * seq_len, seq_len, 0, None) for i in range(seqs)],
        None, None,
        torch.arange(seq_len - 1, tokens, seq_len, device=dev),
    )
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    runner.forward(step, pool)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    del pool
    torch.cuda.empty_cache()
    return peak


def build_pool(runner, *, kv_tokens: int | None, block_size: int, max_batch_tokens: int = 8192) -> tuple[KVPool, RuntimeInfo]:
    device = runner.device
    per_block = 2 * len(runner.layers) * block_size * runner.kv_heads * runner.head_dim * runner.embed.element_size()
    peak = 0
    if device.type == "cuda":
        peak = _warmup_peak_bytes(runner, block_size, max_batch_tokens)
        free, _ = torch.cuda.mem_get_info()
        fit = blocks_that_fit(free, per_block, reserve_bytes=peak + GRAPH_MARGIN_BYTES)
        if kv_tokens is None:
            num_blocks = fit
        else:
            num_blocks = math.ceil(kv_tokens / block_size)
            if num_blocks > fit:
                raise InputError(
                    f"a KV pool of {kv_tokens} tokens needs {num_blocks * per_block / 2**30:.1f} GiB but only "
                    f"{fit * per_block / 2**30:.1f} GiB are free after weights and warm-up; lower --kv-tokens (at most {fit * block_size})",
                    field="kv_tokens",
                )
        name = torch.cuda.get_device_name(device)
    else:
        if kv_tokens is None:
            raise InputError("on CPU give --kv-tokens (or a workload with kv_capacity_tokens)", field="kv_tokens")
        num_blocks = math.ceil(kv_tokens / block_size)
        name = "cpu"
    if num_blocks < 1:
        raise InputError("no memory is left for a KV pool after the weights; use a smaller model or a larger GPU", field="kv_tokens")
    shape = PoolShape(len(runner.layers), num_blocks, block_size, runner.kv_heads, runner.head_dim, runner.embed.element_size())
    pool = KVPool(shape, dtype=runner.dtype, device=device)
    return pool, RuntimeInfo(name, runner.weight_bytes, shape.total_bytes, shape.capacity_tokens, peak)


def build_engine(model: str, *, kv_tokens: int | None, device: str = "cuda", dtype: str = "auto",
                 block_size: int = 16):
    """A preset model's shape with random weights, a KV pool of `kv_tokens` (None: what free GPU
    memory allows; `build_pool` refuses clearly when it does not fit) and the engine over them:
    what the benchmark scripts and the GPU sweep run. On the CPU the host memory is checked first."""
    from runtime.gpu.engine import Engine
    from runtime.gpu.model_presets import resolve_model_config

    dev = check_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    config = resolve_model_config(model)
    if dev.type == "cpu" and kv_tokens is not None:
        check_host_memory(config, torch_dtype, kv_tokens, model_name=model)
    runner = load_runner(config, None, dtype=torch_dtype, device=dev)
    pool, info = build_pool(runner, kv_tokens=kv_tokens, block_size=block_size)
    return Engine(runner, pool), info
