"""A request that cannot fit in an empty KV cache can never finish: reject it on arrival.

Without this check a policy would prefill it, run out of memory, evict it and start again
forever. Policies that do not know output lengths check the prompt plus its first decode token;
those that do (WAIT) check the whole l + l'.
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request


def check_fits_alone(kv: KVBlockManager, request: Request, tokens: int) -> None:
    """InputError if `tokens` KV tokens of `request` exceed the whole cache."""
    if kv.blocks_for_tokens(tokens) > kv.num_blocks:
        raise InputError(
            f"request {request.request_id} needs {tokens} KV tokens (prompt {request.prompt_tokens}) but the KV "
            f"capacity is {kv.capacity_tokens} tokens: raise kv_capacity_tokens or drop the request",
            field="kv_capacity_tokens",
        )
