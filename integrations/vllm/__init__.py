"""WAIT and Nested WAIT served inside vLLM as a scheduler class (docs/vllm-plugin.md).

`pip install -e ".[vllm]"`, then `vllm serve MODEL --scheduler-cls
integrations.vllm.scheduler.FluidschedScheduler --additional-config '{"fluidsched": {"policy":
"policy.json"}}'`. vllm is imported only by `scheduler` and `harness`; `config` and `compat`
are standard library plus the project's policy reader.
"""
