"""The one preallocated paged KV pool: `[layers, 2, num_blocks + 1, block_size, kv_heads, head_dim]`.

Block ids come from the scheduler's `KVBlockManager(track_block_ids=True)`, so the pool and the
scheduler's idea of memory are one object. One extra block at the end (`scratch_block`) is never
handed out: padded rows of a CUDA-graph batch write their K/V there and read it back, so padding
never touches a live request's cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fluid.errors import InputError


@dataclass(frozen=True, slots=True)
class PoolShape:
    num_layers: int
    num_blocks: int  # blocks the scheduler may hand out (excludes the scratch block)
    block_size: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int

    def __post_init__(self) -> None:
        for name in ("num_layers", "num_blocks", "block_size", "kv_heads", "head_dim", "dtype_bytes"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InputError(f"KV pool {name} must be a positive integer, got {value!r}", field=f"kv_pool.{name}")

    @property
    def bytes_per_block(self) -> int:
        return 2 * self.num_layers * self.block_size * self.kv_heads * self.head_dim * self.dtype_bytes

    @property
    def total_bytes(self) -> int:
        return self.bytes_per_block * (self.num_blocks + 1)

    @property
    def capacity_tokens(self) -> int:
        return self.num_blocks * self.block_size


def blocks_that_fit(free_bytes: int, bytes_per_block: int, *, reserve_bytes: int) -> int:
    """Blocks of `bytes_per_block` that fit in `free_bytes` after keeping `reserve_bytes` back."""
    return max(0, (free_bytes - reserve_bytes) // bytes_per_block - 1)  # minus the scratch block


class KVPool:
    def __init__(self, shape: PoolShape, *, dtype: torch.dtype, device: torch.device | str):
        self.shape = shape
        self.scratch_block = shape.num_blocks
        # kv: [layers, 2, num_blocks + 1, block_size, kv_heads, head_dim]
        self.kv = torch.zeros(
            (shape.num_layers, 2, shape.num_blocks + 1, shape.block_size, shape.kv_heads, shape.head_dim),
            dtype=dtype,
            device=device,
        )

    @property
    def block_size(self) -> int:
        return self.shape.block_size

    def layer(self, layer_index: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(k, v) of one layer, each [num_blocks + 1, block_size, kv_heads, head_dim]."""
        return self.kv[layer_index, 0], self.kv[layer_index, 1]

    def write(self, layer_index: int, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor) -> None:
        """Store new tokens' K/V. k, v: [tokens, kv_heads, head_dim]; slots: [tokens] = block·block_size + offset."""
        k_cache, v_cache = self.layer(layer_index)
        flat = (-1, self.shape.kv_heads, self.shape.head_dim)
        k_cache.view(flat).index_copy_(0, slots, k)
        v_cache.view(flat).index_copy_(0, slots, v)
