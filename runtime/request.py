"""A request's state and timestamps, shared by every scheduler and both executors.

Stage model (arXiv 2504.11320, the serving model): a request with prompt length l and output length l'
passes through l' + 1 stages. Stage 0 is its prefill: it computes the KV of the l prompt tokens
(possibly in chunks) and samples the first output token, so TTFT ends there. Decode stage
s = 1..l' feeds the latest token, holds l + s KV tokens, and samples one more token. The request
completes after decode stage l'. Throughput counts the l' decode-stage tokens, as the paper does
(throughput* = Σ λ_j l'_j); `token_times_s` has l' + 1 entries (the prefill's token, then one per
decode stage) so TTFT and every time-between-tokens gap are exact.

Eviction (recompute, as in vLLM and the paper): the request loses its cache; on re-admission it
prefills its prompt plus the s tokens it had decoded (l + s tokens) and continues at stage s + 1.
Tokens already streamed are not streamed again.

Speed: `advance` is on every executor's hot path (once per request per step), so it reads and
writes plain slots and allocates nothing but the appended timestamp. The properties below are
cheap but each is a Python call; inside a per-step loop over many requests, prefer reading the
slots (`cached_tokens < prompt_tokens + decode_steps_done` is `in_prefill`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True, eq=False)
class Request:
    request_id: int
    arrival_s: float
    prompt_tokens: int  # l
    output_tokens: int  # l': number of decode stages
    type_name: str | None = None  # the workload type it was drawn from, if any
    tbt_slo_s: float | None = None  # time-between-tokens SLO (SLAI), if any
    tier: int = 0  # SLO tier; 0 = most important (paying) tier

    # progress
    cached_tokens: int = 0  # KV tokens resident in the cache
    decode_steps_done: int = 0  # s: decode stages completed
    restarts: int = 0  # evictions suffered

    # timestamps (seconds on the executor's clock)
    first_scheduled_s: float | None = None
    prefill_chunk_end_s: list[float] = field(default_factory=list)
    token_times_s: list[float] = field(default_factory=list)
    completion_s: float | None = None
    eviction_times_s: list[float] = field(default_factory=list)  # when each restart happened (set by the executor)

    # --- derived state -------------------------------------------------------------------
    @property
    def prefill_target_tokens(self) -> int:
        """KV tokens the request must hold before its next decode stage: l + s."""
        return self.prompt_tokens + self.decode_steps_done

    @property
    def prefill_remaining(self) -> int:
        """Prefill tokens still to compute (0 once the prefix is cached)."""
        return self.prefill_target_tokens - self.cached_tokens

    @property
    def in_prefill(self) -> bool:
        return self.cached_tokens < self.prefill_target_tokens

    @property
    def finished(self) -> bool:
        return self.completion_s is not None

    @property
    def current_stage(self) -> int:
        """The stage the request's next step belongs to: 0 while prefilling, else s + 1."""
        return 0 if self.in_prefill else self.decode_steps_done + 1

    @property
    def total_tokens_at_completion(self) -> int:
        """KV tokens held at the last stage: l + l'."""
        return self.prompt_tokens + self.output_tokens

    # --- state changes (called by schedulers and `Scheduler.complete_step`) ----------------
    def advance(self, new_tokens: int, end_s: float) -> bool:
        """Record a step that computed `new_tokens` for this request, ending at `end_s`.

        Returns True when the request completed with this step.
        """
        cached = self.cached_tokens
        steps_done = self.decode_steps_done
        target = self.prompt_tokens + steps_done
        if cached < target:  # prefill (possibly a chunk of it)
            if new_tokens > target - cached:
                raise RuntimeError(
                    f"request {self.request_id}: chunk of {new_tokens} tokens exceeds the "
                    f"{target - cached} prefill tokens left"
                )
            cached += new_tokens
            self.cached_tokens = cached
            self.prefill_chunk_end_s.append(end_s)
            if cached == target and not self.token_times_s:
                self.token_times_s.append(end_s)  # the prefill samples the first output token
            return False
        if new_tokens != 1:
            raise RuntimeError(f"request {self.request_id}: a decode step computes 1 token, got {new_tokens}")
        self.cached_tokens = cached + 1
        steps_done += 1
        self.decode_steps_done = steps_done
        self.token_times_s.append(end_s)
        if steps_done >= self.output_tokens:
            self.completion_s = end_s
            return True
        return False

    def evict(self) -> None:
        """Drop the cache (the caller frees the blocks); the request must prefill l + s again."""
        self.cached_tokens = 0
        self.restarts += 1
