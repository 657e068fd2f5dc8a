"""The one "fits in an empty cache" guard: refuse, on arrival, a request that could never finish.

Without this check a policy would prefill such a request, run out of memory, evict it and start
again forever (or stall with nothing to run). Each policy says how many KV tokens the request
must hold at once under its rules (prompt plus first decode token for RAD and SLAI, the whole
l + l' for the FCFS family and WAIT, a worst-case reservation for Orca) and how many blocks its
admission keeps free (a watermark); the test and the message live here.
"""

from __future__ import annotations

from fluid.errors import InputError
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request


def check_fits_alone(
    kv: KVBlockManager,
    request: Request,
    tokens: int,
    *,
    kept_free_blocks: int = 0,
    why: str = "",
    field: str = "kv_capacity_tokens",
    fix: str = "raise kv_capacity_tokens or drop the request",
) -> None:
    """InputError if `tokens` KV tokens of `request` exceed the whole cache less `kept_free_blocks`.

    `why` names the rule that needs those tokens at once (appended to the message); `fix` says
    what the user can change.
    """
    if kv.fits_alone(tokens, kept_free_blocks):
        return
    kept = f" less the {kept_free_blocks} blocks admission keeps free (watermark)" if kept_free_blocks else ""
    because = f" ({why})" if why else ""
    raise InputError(
        f"request {request.request_id} (prompt {request.prompt_tokens}, output {request.output_tokens} tokens) "
        f"needs {tokens} KV tokens at once{because} but the KV capacity is {kv.capacity_tokens} tokens "
        f"({kv.num_blocks} blocks of {kv.block_size}){kept}: {fix}",
        field=field,
    )


def longest_prefill_tokens(request: Request) -> int:
    """The largest prefill the request can ever need: a recompute after its last-but-one decode.

    That recompute prefills everything known, l + (l' − 1) + 1 = l + l' tokens, and its last
    position samples the final token (`Request.evict`).
    """
    return request.prompt_tokens + request.output_tokens


def require_fits(
    kv: KVBlockManager,
    request: Request,
    *,
    policy: str,
    admission_free_blocks: int = 0,
    whole_prefill_budget_tokens: int | None = None,
) -> None:
    """Raise InputError if `request` could never run under `policy`, even with the server to itself.

    It must hold l + l' KV tokens at its last stage; a policy that admits only while
    `admission_free_blocks` stay free (a watermark) must also admit its longest prefill with them
    spare; a policy without chunked prefill must fit its longest prefill in one step's budget.
    """
    longest = longest_prefill_tokens(request)
    check_fits_alone(kv, request, longest, why="its last stage")
    if admission_free_blocks:
        check_fits_alone(
            kv, request, longest, kept_free_blocks=admission_free_blocks,
            why=f"its longest prefill, admitted by {policy}", fix="raise the capacity or lower the watermark",
        )
    if whole_prefill_budget_tokens is not None and longest > whole_prefill_budget_tokens:
        raise InputError(
            f"request {request.request_id} (prompt {request.prompt_tokens} + output {request.output_tokens} tokens) "
            f"can never be scheduled by {policy}: its longest prefill (a recompute of {longest} tokens) exceeds "
            f"max_num_batched_tokens = {whole_prefill_budget_tokens}; raise max_num_batched_tokens",
            field="max_num_batched_tokens",
        )
