"""A request's state and timestamps, shared by every scheduler and both executors.

Stage model (arXiv 2504.11320, the serving model): a request with prompt length l and output length l'
passes through l' + 1 stages. Stage 0 is its prefill: it computes the KV of the l prompt tokens
(possibly in chunks) and samples the first output token, so TTFT ends there. Decode stage
s = 1..l' feeds the latest token, holds l + s KV tokens, and samples one more token. The request
completes after decode stage l'. Throughput counts the l' decode-stage tokens, as the paper does
(throughput* = Σ λ_j l'_j); `token_times_s` has l' + 1 entries (the prefill's token, then one per
decode stage) so TTFT and every time-between-tokens gap are exact.

Eviction (recompute, as vLLM v1 0.32, vLLM v0 and Sarathi-Serve do it; see docs/baselines.md):
the request loses its cache and, on re-admission, prefills every token it knows: its prompt and
all the tokens sampled so far, the last one included. After s decode stages that is l + s + 1
tokens (the prefill's token plus s decode tokens), and the last position of that prefill samples
the token of decode stage s + 1 directly, so no extra decode step follows. A request evicted in
the middle of its first prefill has sampled nothing and prefills its l prompt tokens again.
(`evict(paper=True)` keeps the paper's reading instead: re-prefill l + s, then decode stage s + 1.)
Tokens already streamed are not streamed again; the recompute's sampled token is new.

`prefill_target_tokens` is the one home of "how many KV tokens must be cached before the next
decode": l at arrival, set by `evict` to what the recompute must prefill. "Is this request
prefilling?" is `in_prefill`, i.e. `cached_tokens < prefill_target_tokens`; a per-step loop over
many requests reads the two slots directly (a property is a Python call).

Speed: `advance` is on every executor's hot path (once per request per step), so it reads and
writes plain slots and allocates nothing but the appended timestamp.
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
    #: KV tokens the request must hold before its next decode stage: l, or after an eviction the
    #: l + s + 1 tokens its recompute prefills (l if it was evicted before its first token)
    prefill_target_tokens: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.prefill_target_tokens = self.prompt_tokens

    # --- derived state -------------------------------------------------------------------
    @property
    def prefill_remaining(self) -> int:
        """Prefill tokens still to compute (0 once the prefix is cached)."""
        return self.prefill_target_tokens - self.cached_tokens

    @property
    def in_prefill(self) -> bool:
        """Whether the request is prefilling (its first prefill or a recompute), not decoding."""
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
        target = self.prefill_target_tokens
        if cached < target:  # prefill (possibly a chunk of it)
            if new_tokens > target - cached:
                raise RuntimeError(
                    f"request {self.request_id}: chunk of {new_tokens} tokens exceeds the "
                    f"{target - cached} prefill tokens left"
                )
            cached += new_tokens
            self.cached_tokens = cached
            self.prefill_chunk_end_s.append(end_s)
            if cached < target:
                return False  # a middle chunk samples nothing
            if not self.token_times_s:
                self.token_times_s.append(end_s)  # the first prefill samples the first output token
                return False
            if target == self.prompt_tokens + steps_done:
                return False  # the paper's recompute (`evict(paper=True)`): stage s + 1 decodes next
            # the engines' recompute: its last chunk samples the token of decode stage s + 1
        else:
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

    def evict(self, *, paper: bool = False) -> None:
        """Drop the cache (the caller frees the blocks); the request must prefill what it knows again.

        That is l + s + 1 tokens once its first token was sampled (vLLM's `num_tokens`), else l.
        `paper=True` is the model of arXiv 2504.11320 (the fluid benchmark) as this project reads it: the prompt
        restarts from its prefill stage, re-prefilling l + s tokens without sampling, and decode
        stage s + 1 follows as a step of its own (docs/baselines.md, "Recompute").
        """
        self.cached_tokens = 0
        self.restarts += 1
        if self.token_times_s:
            self.prefill_target_tokens = self.prompt_tokens + self.decode_steps_done + (0 if paper else 1)
