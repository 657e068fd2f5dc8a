"""Shared pieces for the GPU-runtime tests: a tiny random Llama, a tiny chunked-prefill scheduler and a
reference check."""

from __future__ import annotations

from collections import deque

import torch

from runtime.gpu.checkpoint import build_random_model
from runtime.gpu.model import LlamaRunner
from runtime.gpu.model_presets import resolve_model_config
from runtime.request import Request
from runtime.schedulers.base import Batch, Scheduler


def tiny_llama(seed: int):
    """(config, transformers model, LlamaRunner) of the random tiny-llama preset in fp32 on CPU."""
    torch.set_num_threads(1)
    cfg = resolve_model_config("tiny-llama")
    hf = build_random_model(cfg, dtype=torch.float32, device="cpu", seed=seed)
    return cfg, hf, LlamaRunner.from_hf(hf)


class TinyChunkedScheduler(Scheduler):
    """FCFS with chunked prefill under a token budget; evicts the newest request when memory is short.

    `evict_every=k` also evicts the newest running request every k-th step, to exercise restarts.
    """

    name = "tiny-chunked"

    def __init__(self, kv, token_budget: int = 32, max_seqs: int = 8, evict_every: int = 0):
        super().__init__(kv)
        self.token_budget, self.max_seqs, self.evict_every = token_budget, max_seqs, evict_every
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.steps = 0

    def add_request(self, request: Request) -> None:
        self.waiting.append(request)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def on_finished(self, requests: list[Request]) -> None:
        done = {r.request_id for r in requests}
        self.running = [r for r in self.running if r.request_id not in done]

    def _evict_newest(self, batch: Batch) -> None:
        victim = self.running.pop()
        self.preempt(victim, batch)
        self.waiting.appendleft(victim)

    def schedule(self, now_s: float) -> Batch:
        batch = Batch()
        self.steps += 1
        if self.evict_every and self.steps % self.evict_every == 0 and len(self.running) > 1:
            self._evict_newest(batch)
        budget = self.token_budget
        scheduled = set()
        for r in list(self.running):
            if r not in self.running:
                continue
            n = 1 if not r.in_prefill else min(r.prefill_remaining, budget)
            if n == 0:
                continue
            while not self.kv.can_grow(r, n) and self.running[-1] is not r:
                self._evict_newest(batch)
            if not self.kv.can_grow(r, n):
                continue
            self.reserve(batch, r, n)
            scheduled.add(r.request_id)
            budget -= n
        while self.waiting and len(self.running) < self.max_seqs and budget > 0:
            r = self.waiting[0]
            n = min(r.prefill_remaining, budget)
            if not self.kv.can_grow(r, n):
                break
            self.waiting.popleft()
            self.running.append(r)
            self.reserve(batch, r, n)
            budget -= n
        return batch


def reference_check(hf_model, engine, requests, *, device="cpu"):
    """Greedy tokens and logits of each finished request against one transformers forward.

    Returns (token mismatches, max |logit diff|, max |reference logit|).
    """
    mismatches, max_diff, max_ref = 0, 0.0, 0.0
    for r in requests:
        seq = engine.sequences[r.request_id]
        assert len(seq) == r.prompt_tokens + r.output_tokens + 1
        ids = torch.tensor(seq[:-1], device=device)[None]
        with torch.no_grad():
            ref = hf_model(input_ids=ids).logits[0, r.prompt_tokens - 1 :].float().cpu()  # [l' + 1, vocab]
        ref_tokens = ref.argmax(-1).tolist()
        mismatches += sum(a != b for a, b in zip(ref_tokens, seq[r.prompt_tokens :]))
        if engine.keep_logits:
            got = torch.stack(engine.logits[r.request_id])
            max_diff = max(max_diff, (got - ref).abs().max().item())
        max_ref = max(max_ref, ref.abs().max().item())
    return mismatches, max_diff, max_ref
