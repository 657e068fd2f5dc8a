"""Sarathi-Serve's own scheduler as the reference for `sarathi`: same arrivals, same clock.

    python -m validation.sarathi_oracle --sarathi PATH [--json OUT]

PATH is a checkout of github microsoft/sarathi-serve (matched at commit 96f9911); run it from the
repository root in an environment with torch and transformers (the vLLM oracle's venv serves,
docs/baselines.md). Sarathi-Serve is not on the package registry, so this oracle is not part of
CI; docs/baselines.md gives its results.

The harness drives `sarathi.core.scheduler.sarathi_scheduler.SarathiScheduler` directly and plays
the engine's part after each step as `BaseSequenceManager` does (`on_schedule` resets preempted
sequences for recompute; `on_step_completed` advances prompt chunks, appends a token to every
sequence whose prompt is done, checks the stop condition). Three things stand in for the engine
and are not the scheduler under test: the metrics store is a stub (it only records), the model
config is an object with `max_model_len` (the scheduler reads nothing else), and after a
recompute the harness lowers `max_tokens` by the tokens already generated, because
`reset_for_recompute` folds them into the prompt and restarts the output count, which would
make a preempted request generate more tokens in total than one never preempted.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from dataclasses import asdict, dataclass
from pathlib import Path

from runtime.kv_blocks import KVBlockManager
from runtime.schedulers.sarathi import SarathiScheduler
from integrations.vllm.harness import BATCH_TIME, BLOCK_SIZE, TOKEN_ID
from validation.vllm_oracle import OracleScenario

SCENARIOS: tuple[OracleScenario, ...] = (  # max_num_batched_tokens is the chunk size here
    OracleScenario("loose-memory", 300, (20, 400), (10, 200), 20.0, 20_000, 512, 128),
    OracleScenario("tight-memory", 300, (20, 400), (10, 200), 10.0, 250, 512, 128, seed=1),
    OracleScenario("small-chunk", 300, (20, 400), (10, 200), 5.0, 250, 128, 128, seed=2),
    OracleScenario("large-chunk", 300, (100, 1500), (10, 200), 8.0, 600, 2048, 128, seed=3),
    OracleScenario("many-seats", 600, (5, 60), (5, 120), 200.0, 400, 512, 256, seed=4),
    OracleScenario("few-seats", 200, (20, 300), (10, 100), 20.0, 300, 512, 8, seed=5),
    OracleScenario("long-prompts", 80, (1000, 6000), (10, 150), 2.0, 1500, 512, 128, seed=6),
)


@dataclass(frozen=True)
class SarathiResult:
    scenario: str
    steps: int
    steps_matched: int
    preemptions_ours: int
    preemptions_sarathi: int
    completed_ours: int
    first_mismatch: tuple | None

    def to_dict(self) -> dict:
        return asdict(self)


def _import_sarathi(path: str):
    sys.path.insert(0, path)
    stub = types.ModuleType("sarathi.metrics.metrics_store")  # records metrics only; needs pandas/wandb

    class MetricsStore:
        @classmethod
        def get_instance(cls):
            return None

    stub.MetricsStore = MetricsStore
    sys.modules["sarathi.metrics.metrics_store"] = stub
    from sarathi.config import CacheConfig, ParallelConfig, SarathiSchedulerConfig
    from sarathi.core.datatypes.sampling_params import SamplingParams
    from sarathi.core.datatypes.sequence import Sequence
    from sarathi.core.datatypes.sequence_status import SequenceStatus
    from sarathi.core.scheduler.sarathi_scheduler import SarathiScheduler as Real

    return types.SimpleNamespace(
        Real=Real, CacheConfig=CacheConfig, ParallelConfig=ParallelConfig, Config=SarathiSchedulerConfig,
        SamplingParams=SamplingParams, Sequence=Sequence, Status=SequenceStatus,
    )


def run_scenario(sar, scenario: OracleScenario, *, max_steps: int = 200_000) -> SarathiResult:
    requests = scenario.requests()
    real = sar.Real(
        types.SimpleNamespace(max_model_len=1 << 20),
        sar.Config(max_num_seqs=scenario.max_num_seqs, chunk_size=scenario.max_num_batched_tokens),
        sar.CacheConfig(block_size=BLOCK_SIZE, num_gpu_blocks=scenario.kv_blocks),
        sar.ParallelConfig(pipeline_parallel_size=1),
    )
    ours = SarathiScheduler(
        KVBlockManager(scenario.kv_blocks * BLOCK_SIZE, BLOCK_SIZE),
        chunk_size=scenario.max_num_batched_tokens,
        max_num_seqs=scenario.max_num_seqs,
    )
    seqs = {}
    now_s, nxt, steps, matched, pre_ours, pre_real = 0.0, 0, 0, 0, 0, 0
    first = None
    while steps < max_steps:
        while nxt < len(requests) and requests[nxt].arrival_s <= now_s:
            r = requests[nxt]
            params = sar.SamplingParams(ignore_eos=True, max_tokens=r.output_tokens + 1)
            seq = sar.Sequence(str(r.request_id), "", [TOKEN_ID] * r.prompt_tokens, BLOCK_SIZE, -1, r.arrival_s, params)
            seqs[seq.seq_id] = seq
            real.add_seq(seq)
            ours.add_request(r)
            nxt += 1
        batch = ours.schedule(now_s)
        out = real.schedule()
        for sid in out.preempted_seq_ids:  # the engine's on_schedule
            seq = seqs[sid]
            generated = seq.get_output_len()
            seq.reset_for_recompute()
            seq.sampling_params = sar.SamplingParams(ignore_eos=True, max_tokens=seq.sampling_params.max_tokens - generated)
        mine = {w.request.request_id: w.num_new_tokens for w in batch.items}
        theirs = {
            int(m.seq_id): (1 if seqs[m.seq_id].prompt_stage_processing_finished else m.prompt_chunk_len)
            for m in out.scheduled_seq_metadata_list
        }
        mine_pre = sorted(r.request_id for r in batch.evicted)
        real_pre = sorted(int(s) for s in out.preempted_seq_ids)
        if not mine and not theirs:
            real.on_step_completed()
            if nxt == len(requests):
                break
            now_s = max(now_s, requests[nxt].arrival_s)
            continue
        steps += 1
        pre_ours += len(mine_pre)
        pre_real += len(real_pre)
        if mine == theirs and mine_pre == real_pre:
            matched += 1
        elif first is None:
            first = (steps, mine, theirs, mine_pre, real_pre)
        end_s = now_s + BATCH_TIME.step_time_s(batch.shape()) if batch.items else now_s
        ours.complete_step(batch, now_s, end_s)
        for m in out.scheduled_seq_metadata_list:  # the engine's on_step_completed
            seq = seqs[m.seq_id]
            seq.set_status(sar.Status.RUNNING)
            if not seq.prompt_processing_finished:
                seq.update_prompt_tokens_stage_processed(m.prompt_chunk_len)
                seq.update_prompt_tokens_processed(m.prompt_chunk_len)
            seq.set_status(sar.Status.PAUSED)
            if seq.prompt_processing_finished:
                seq.append_token_id(TOKEN_ID)
                seq.check_stop()
        real.on_step_completed()
        now_s = end_s
    done = sum(1 for r in requests if r.completion_s is not None)
    return SarathiResult(scenario.name, steps, matched, pre_ours, pre_real, done, first)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sarathi", required=True, help="path to a checkout of microsoft/sarathi-serve")
    parser.add_argument("--json", help="write the results to this JSON file")
    args = parser.parse_args(argv)
    if not (Path(args.sarathi) / "sarathi" / "core" / "scheduler" / "sarathi_scheduler.py").is_file():
        print(f"--sarathi {args.sarathi}: no sarathi/core/scheduler/sarathi_scheduler.py there", file=sys.stderr)
        return 2
    sar = _import_sarathi(args.sarathi)
    print(f"Sarathi-Serve's SarathiScheduler vs sarathi (block {BLOCK_SIZE}, clock {BATCH_TIME})")
    print(f"{'scenario':<14} {'steps':>6} {'matched':>8} {'preempt ours':>13} {'preempt real':>13} {'done':>5}")
    results = []
    for scenario in SCENARIOS:
        res = run_scenario(sar, scenario)
        results.append(res)
        print(f"{res.scenario:<14} {res.steps:>6} {res.steps_matched:>8} {res.preemptions_ours:>13} "
              f"{res.preemptions_sarathi:>13} {res.completed_ours:>5}")
        if res.first_mismatch is not None:
            print(f"  first mismatch: {res.first_mismatch}")
    if args.json:
        doc = {"sarathi_commit": "96f9911", "batch_time": BATCH_TIME.to_dict(), "results": [r.to_dict() for r in results]}
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
