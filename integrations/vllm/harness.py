"""vLLM's real v1 scheduler driven without a model, on the project's simulated clock.

`build_vllm_scheduler(config, cls)` builds `cls` (vLLM's `Scheduler`, or `FluidschedScheduler`
with a plan) from a tiny local model `config.json` (no weights, no tokenizer, offline), chunked
prefill on, prefix caching off, and one full-attention KV group of `kv_blocks` + 1 blocks (vLLM
keeps block 0 as its null block). `model_output(scheduler, output)` is the model's part: one
sampled token for every request whose scheduled work reaches the end of its known sequence. A
project request with l' decode stages is a vLLM request with `max_tokens = l' + 1` (the
prefill's token plus one per decode).

Two drivers: `run_side_by_side` steps a project scheduler and a vLLM scheduler on one clock and
records, per step, which requests each scheduled (with how many tokens) and which it preempted;
`run_alone` serves an arrival stream with one vLLM scheduler and returns its serving metrics.
The clock: each step lasts the batch time of the step's shape (the project's batch on the
side-by-side run, vLLM's own on `run_alone`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from fluid.batch_time import AffineBatchTime, BatchShape, decode_key_tiles
from runtime.request import Request

BLOCK_SIZE = 16
TOKEN_ID = 7  # every prompt and sampled token; with prefix caching off its value does not matter
MAX_MODEL_LEN = 131072
MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128,
    "num_attention_heads": 2, "num_key_value_heads": 2, "num_hidden_layers": 1, "vocab_size": 1000,
    "max_position_embeddings": MAX_MODEL_LEN, "rms_norm_eps": 1e-5, "torch_dtype": "float32",
}
# the clock: 10 ms per step plus 0.01 ms per KV token touched
BATCH_TIME = AffineBatchTime(0.01, 1e-5)


@dataclass(frozen=True)
class EngineShape:
    """vLLM's scheduling limits and pool for one run."""

    kv_blocks: int  # of BLOCK_SIZE tokens
    max_num_batched_tokens: int = 65536
    max_num_seqs: int = 1024
    long_prefill_token_threshold: int = 0


def write_model_dir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(MODEL_CONFIG))
    return str(path)


def build_vllm_scheduler(engine: EngineShape, model_dir: str, cls=None, plan=None):
    """vLLM 0.32's `Scheduler` (or `cls`) with no model; `plan` is handed to a FluidschedScheduler."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    if plan is not None:
        from integrations.vllm.scheduler import FluidschedScheduler

        cls = type("HarnessFluidschedScheduler", (cls or FluidschedScheduler,), {"fluidsched_plan": plan})
    cls = cls or Scheduler
    scheduler_config = SchedulerConfig(
        max_num_seqs=engine.max_num_seqs, max_num_batched_tokens=engine.max_num_batched_tokens,
        max_model_len=MAX_MODEL_LEN, enable_chunked_prefill=True, is_encoder_decoder=False,
        long_prefill_token_threshold=engine.long_prefill_token_threshold,
    )
    model_config = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float32", max_model_len=MAX_MODEL_LEN)
    cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=False)
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config)
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1, dtype=torch.float32)
    num_blocks = engine.kv_blocks + 1  # block 0 is vLLM's null block
    kv_cache_config = KVCacheConfig(num_blocks=num_blocks, kv_cache_tensors=[],
                                    kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)])
    cache_config.num_gpu_blocks = num_blocks
    return cls(vllm_config=vllm_config, kv_cache_config=kv_cache_config,
               structured_output_manager=StructuredOutputManager(vllm_config), block_size=BLOCK_SIZE, log_stats=False)


def vllm_request(r: Request, class_name: str | None = None):
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request as VllmRequest

    extra = {"fluidsched_class": class_name} if class_name else None
    params = SamplingParams(max_tokens=r.output_tokens + 1, ignore_eos=True, extra_args=extra)
    return VllmRequest(request_id=str(r.request_id), prompt_token_ids=[TOKEN_ID] * r.prompt_tokens,
                       sampling_params=params, pooling_params=None, arrival_time=r.arrival_s)


def model_output(scheduler, output):
    """A token for every scheduled request whose work reaches its last known token."""
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(output.num_scheduled_tokens)
    sampled = [[TOKEN_ID] if scheduler.requests[i].num_computed_tokens >= scheduler.requests[i].num_tokens else []
               for i in ids]
    return ModelRunnerOutput(req_ids=ids, req_id_to_index={rid: k for k, rid in enumerate(ids)}, sampled_token_ids=sampled)


def used_blocks(scheduler) -> int:
    pool = scheduler.kv_cache_manager.block_pool
    return pool.num_gpu_blocks - 1 - pool.get_num_free_blocks()


def vllm_step_shape(scheduler, output) -> BatchShape:
    """The shape of the step vLLM just scheduled (its requests have already advanced)."""
    new = kv = decodes = prefills = pairs = 0
    contexts = []  # the decodes' cached context (total − the one new token), for their key tiles
    for rid, n in output.num_scheduled_tokens.items():
        total = scheduler.requests[rid].num_computed_tokens  # context + n, after the schedule
        new += n
        kv += total
        if n == 1 and total >= scheduler.requests[rid].num_tokens:
            decodes += 1
            contexts.append(total - 1)
        else:
            prefills += 1
            pairs += n * total
    tiles = sum(decode_key_tiles(c, beside_prefill=prefills > 0) for c in contexts)
    return BatchShape(new, kv, decodes, prefills, pairs, tiles)


@dataclass
class SideBySide:
    """Per-step agreement of a project scheduler and a vLLM scheduler on one clock."""

    steps: int = 0
    steps_matched: int = 0
    admissions_differ: int = 0  # steps whose newly started requests differ
    pauses_differ: int = 0  # steps whose set of resident requests left out differs
    tokens_differ: int = 0  # steps where a request both ran got different token counts
    preemptions_ours: int = 0
    preemptions_vllm: int = 0
    completed_ours: int = 0
    completed_vllm: int = 0
    peak_blocks_vllm: int = 0
    pool_blocks: int = 0
    first_mismatch: dict | None = None
    first_preemption_step: int | None = None  # either side's
    pauses_ours: int = 0
    pauses_vllm: int = 0
    counters: dict = field(default_factory=dict)


def run_side_by_side(requests: list[Request], ours, theirs, *, class_of=None, batch_time=BATCH_TIME,
                     max_steps: int = 200_000) -> SideBySide:
    """Drive `ours` (a project Scheduler) and `theirs` (a vLLM scheduler) over the same arrivals.

    Admissions: the requests scheduled for the first time in a step. Pauses: the requests that
    ran before, have not finished and are not scheduled this step."""
    res = SideBySide(pool_blocks=theirs.kv_cache_manager.block_pool.num_gpu_blocks - 1)
    clock = {"now": 0.0}
    if hasattr(theirs, "fluidsched_clock"):
        theirs.fluidsched_clock = lambda: clock["now"]
    nxt, ended = 0, False
    started_ours: set[int] = set()
    started_vllm: set[int] = set()
    done_ours: set[int] = set()
    done_vllm: set[int] = set()
    while res.steps < max_steps:
        now = clock["now"]
        while nxt < len(requests) and requests[nxt].arrival_s <= now:
            r = requests[nxt]
            ours.add_request(r)
            theirs.add_request(vllm_request(r, class_of(r) if class_of else None))
            nxt += 1
        if nxt == len(requests) and not ended:
            ours.on_arrivals_ended()
            if hasattr(theirs, "fluidsched_arrivals_ended"):
                theirs.fluidsched_arrivals_ended()
            ended = True
        batch = ours.schedule(now)
        out = theirs.schedule()
        mine = {w.request.request_id: w.num_new_tokens for w in batch.items}
        vllm = {int(rid): n for rid, n in out.num_scheduled_tokens.items()}
        mine_pre = sorted(r.request_id for r in batch.evicted)
        vllm_pre = sorted(int(rid) for rid in out.preempted_req_ids)
        if not mine and not vllm and not mine_pre and not vllm_pre:
            if nxt == len(requests) and not ours.has_unfinished() and not theirs.has_unfinished_requests():
                break
            wake = ours.next_wakeup_s()
            upcoming = [t for t in (requests[nxt].arrival_s if nxt < len(requests) else None, wake) if t is not None and t > now]
            if not upcoming:
                break  # both stalled with nothing to wait for
            clock["now"] = min(upcoming)
            continue
        res.steps += 1
        if (mine_pre or vllm_pre) and res.first_preemption_step is None:
            res.first_preemption_step = res.steps
        res.preemptions_ours += len(mine_pre)
        res.preemptions_vllm += len(vllm_pre)
        new_ours = set(mine) - started_ours
        new_vllm = set(vllm) - started_vllm
        paused_ours = (started_ours - done_ours) - set(mine) - set(mine_pre)
        paused_vllm = (started_vllm - done_vllm) - set(vllm) - set(vllm_pre)
        res.pauses_ours += len(paused_ours)
        res.pauses_vllm += len(paused_vllm)
        if mine == vllm and mine_pre == vllm_pre:
            res.steps_matched += 1
        else:
            res.admissions_differ += new_ours != new_vllm
            res.pauses_differ += paused_ours != paused_vllm
            res.tokens_differ += any(mine[k] != vllm[k] for k in set(mine) & set(vllm))
            if res.first_mismatch is None:
                res.first_mismatch = {"step": res.steps, "now_s": now, "ours": mine, "vllm": vllm,
                                      "ours_preempted": mine_pre, "vllm_preempted": vllm_pre}
        started_ours |= set(mine)
        started_vllm |= set(vllm)
        res.peak_blocks_vllm = max(res.peak_blocks_vllm, used_blocks(theirs))
        end = now + (batch_time.step_time_s(batch.shape()) if batch.items else _idle_step_s(batch_time))
        done_ours |= {r.request_id for r in ours.complete_step(batch, now, end)}
        if out.num_scheduled_tokens:
            for eco in theirs.update_from_output(out, model_output(theirs, out)).values():
                done_vllm |= {int(o.request_id) for o in eco.outputs if o.finish_reason is not None}
        started_vllm -= set(vllm_pre)  # a preempted request starts again on re-admission
        started_ours -= set(mine_pre)
        clock["now"] = end
    res.completed_ours = len(done_ours)
    res.completed_vllm = len(done_vllm)
    res.counters = dict(getattr(theirs, "fluidsched_counters", {}))
    return res


@dataclass(frozen=True)
class ServingResult:
    """One vLLM scheduler serving an arrival stream on the simulated clock."""

    completed: int
    preemptions: int
    makespan_s: float
    output_tokens: int
    throughput_tokens_per_s: float
    ttft_mean_s: float
    ttft_median_s: float
    ttft_p99_s: float
    latency_mean_s: float
    peak_blocks: int
    pool_blocks: int
    steps: int
    counters: dict


def _idle_step_s(batch_time) -> float:
    return batch_time.step_time_s(BatchShape(0, 0, 0, 0, 0))


def _quantile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


def run_alone(requests: list[Request], scheduler, *, class_of=None, batch_time=BATCH_TIME,
              max_steps: int = 500_000) -> ServingResult:
    """Serve `requests` with one vLLM scheduler; TTFT ends at the step that samples the first token.
    Each step lasts `batch_time.step_time_s` of its shape; an empty step (a cohort held on its
    drain timer) lasts d0."""
    idle_s = _idle_step_s(batch_time)
    clock = {"now": 0.0}
    if hasattr(scheduler, "fluidsched_clock"):
        scheduler.fluidsched_clock = lambda: clock["now"]
    by_id = {str(r.request_id): r for r in requests}
    first_s: dict[str, float] = {}
    done_s: dict[str, float] = {}
    tokens = preemptions = steps = peak = 0
    nxt, ended = 0, False
    while steps < max_steps:
        now = clock["now"]
        while nxt < len(requests) and requests[nxt].arrival_s <= now:
            scheduler.add_request(vllm_request(requests[nxt], class_of(requests[nxt]) if class_of else None))
            nxt += 1
        if nxt == len(requests) and not ended:
            if hasattr(scheduler, "fluidsched_arrivals_ended"):
                scheduler.fluidsched_arrivals_ended()
            ended = True
        out = scheduler.schedule()
        preemptions += len(out.preempted_req_ids)
        if not out.num_scheduled_tokens:
            if nxt < len(requests):
                clock["now"] = max(now + idle_s, requests[nxt].arrival_s) if not scheduler.has_unfinished_requests() \
                    else now + idle_s
                continue
            if not scheduler.has_unfinished_requests():
                break
            clock["now"] = now + idle_s  # a held cohort waits on its drain timer: an empty step
            continue
        steps += 1
        peak = max(peak, used_blocks(scheduler))
        end = now + batch_time.step_time_s(vllm_step_shape(scheduler, out))
        for eco in scheduler.update_from_output(out, model_output(scheduler, out)).values():
            for o in eco.outputs:
                if o.new_token_ids and o.request_id not in first_s:
                    first_s[o.request_id] = end
                tokens += len(o.new_token_ids)
                if o.finish_reason is not None:
                    done_s[o.request_id] = end
        clock["now"] = end
    ttft = [first_s[i] - by_id[i].arrival_s for i in first_s]
    latency = [done_s[i] - by_id[i].arrival_s for i in done_s]
    makespan = max(done_s.values(), default=0.0) - (requests[0].arrival_s if requests else 0.0)
    pool = scheduler.kv_cache_manager.block_pool.num_gpu_blocks - 1
    return ServingResult(
        len(done_s), preemptions, makespan, tokens, tokens / makespan if makespan > 0 else 0.0,
        sum(ttft) / len(ttft) if ttft else float("nan"), _quantile(ttft, 0.5), _quantile(ttft, 0.99),
        sum(latency) / len(latency) if latency else float("nan"), peak, pool, steps,
        dict(getattr(scheduler, "fluidsched_counters", {})),
    )
