"""KV-cache memory in blocks, without torch.

The scheduler's view of memory and the GPU's real pool are the same object: the GPU engine asks
this manager for each request's block table and indexes its preallocated pool with it. A block
size of 16 is vLLM's; 1 gives the paper's token-level memory model. Capacity C is in tokens and
rounds down to whole blocks.

Cost: `can_grow`, `blocks_needed`, `grow`, `try_grow` and `grow_one_block` are O(1) (a dict
lookup and integer arithmetic; they allocate only when block ids are tracked); `release` is O(1)
without block ids. They are safe to call once per request per step. `blocks_for_tokens` is the one
tokens-to-blocks conversion; the decode loops (`Scheduler.reserve_decodes`) need none, since one
token more is at most one block more (`grow_one_block`).
"""

from __future__ import annotations

from runtime.request import Request


class KVCapacityError(RuntimeError):
    """A scheduler asked for more blocks than are free. Schedulers check `can_grow` first."""


class KVBlockManager:
    def __init__(self, capacity_tokens: int, block_size: int = 16, *, track_block_ids: bool = False):
        if block_size < 1:
            raise ValueError(f"block_size must be ≥ 1, got {block_size}")
        if capacity_tokens < block_size:
            raise ValueError(f"capacity of {capacity_tokens} tokens holds no block of {block_size} tokens")
        self.block_size = block_size
        self.num_blocks = capacity_tokens // block_size
        self.capacity_tokens = self.num_blocks * block_size
        self.free_blocks = self.num_blocks
        self._held: dict[int, int] = {}  # request_id -> blocks held
        self.track_block_ids = track_block_ids
        # block ids are only materialised for an executor that indexes a real pool
        self._free_ids: list[int] = list(range(self.num_blocks - 1, -1, -1)) if track_block_ids else []
        self._tables: dict[int, list[int]] = {}

    # --- queries -------------------------------------------------------------------------
    @property
    def used_blocks(self) -> int:
        return self.num_blocks - self.free_blocks

    @property
    def used_tokens(self) -> int:
        """Token slots reserved (whole blocks)."""
        return self.used_blocks * self.block_size

    def blocks_held(self, request: Request) -> int:
        return self._held.get(request.request_id, 0)

    def blocks_for_tokens(self, tokens: int) -> int:
        """Blocks that hold `tokens` KV tokens (rounded up): the one tokens-to-blocks conversion."""
        return -(-tokens // self.block_size)

    def blocks_needed(self, request: Request, new_tokens: int) -> int:
        """Extra blocks `request` needs to hold its cached tokens plus `new_tokens`."""
        return max(0, self.blocks_for_tokens(request.cached_tokens + new_tokens) - self._held.get(request.request_id, 0))

    def can_grow(self, request: Request, new_tokens: int) -> bool:
        return self.blocks_needed(request, new_tokens) <= self.free_blocks

    def fits_alone(self, tokens: int, kept_free_blocks: int = 0) -> bool:
        """Whether `tokens` KV tokens fit in the whole (empty) cache less `kept_free_blocks`."""
        return self.blocks_for_tokens(tokens) <= self.num_blocks - kept_free_blocks

    def block_table(self, request: Request) -> list[int]:
        if not self.track_block_ids:
            raise RuntimeError("block ids are tracked only when the manager is built with track_block_ids=True")
        return self._tables.get(request.request_id, [])

    # --- changes -------------------------------------------------------------------------
    def grow(self, request: Request, new_tokens: int) -> None:
        """Reserve blocks so that `request` can hold cached_tokens + new_tokens."""
        if not self.try_grow(request, new_tokens):
            raise KVCapacityError(
                f"request {request.request_id} needs {self.blocks_needed(request, new_tokens)} blocks, "
                f"{self.free_blocks} free of {self.num_blocks}"
            )

    def try_grow(self, request: Request, new_tokens: int) -> bool:
        """`grow` if the blocks are free (True), else change nothing (False): one conversion, not
        a `can_grow` then a `grow`."""
        rid = request.request_id
        held = self._held.get(rid, 0)
        need = self.blocks_for_tokens(request.cached_tokens + new_tokens) - held
        if need <= 0:
            return True
        if need > self.free_blocks:
            return False
        self.free_blocks -= need
        self._held[rid] = held + need
        if self.track_block_ids:
            table = self._tables.setdefault(rid, [])
            for _ in range(need):
                table.append(self._free_ids.pop())
        return True

    def grow_one_block(self, request_id: int, held: int) -> None:
        """Give the request that holds `held` blocks one more; the caller checked that one is free.

        A decode adds one token, so at a block boundary it needs exactly one block (its `held`
        blocks hold its cached tokens, as `audit` checks): the decode loops count blocks
        incrementally with this instead of converting tokens to blocks for every decode."""
        self.free_blocks -= 1
        self._held[request_id] = held + 1
        if self.track_block_ids:
            self._tables.setdefault(request_id, []).append(self._free_ids.pop())

    def release(self, request: Request) -> None:
        """Free every block `request` holds (completion or eviction)."""
        held = self._held.pop(request.request_id, 0)
        self.free_blocks += held
        if self.track_block_ids:
            self._free_ids.extend(reversed(self._tables.pop(request.request_id, [])))

    # --- checks --------------------------------------------------------------------------
    def audit(self, requests) -> None:
        """Check the bookkeeping against the requests; raise KVCapacityError on any mismatch.

        Block conservation (held + free = total, nothing negative), and every request's cached
        tokens fit in the blocks it holds. O(requests): for tests and `simulate(audit=True)`.
        """
        held_total = sum(self._held.values())
        if self.free_blocks < 0 or held_total + self.free_blocks != self.num_blocks:
            raise KVCapacityError(
                f"block bookkeeping broken: {held_total} held + {self.free_blocks} free != {self.num_blocks} blocks"
            )
        for r in requests:
            if r.completion_s is not None:
                continue  # completed requests released their blocks and keep their count
            held = self._held.get(r.request_id, 0)
            if r.cached_tokens > held * self.block_size:
                raise KVCapacityError(
                    f"request {r.request_id} caches {r.cached_tokens} tokens in {held} blocks of {self.block_size}"
                )
            if self.track_block_ids and len(self._tables.get(r.request_id, [])) != held:
                raise KVCapacityError(f"request {r.request_id}: block table length != {held} blocks held")
