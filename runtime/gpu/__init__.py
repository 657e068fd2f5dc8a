"""The GPU executor: the only part of the project that imports torch and triton.

A torch Llama forward over a preallocated paged KV cache (`model`, `attention`, `kv_pool`), its
Triton kernels (`kernels/`), CUDA graphs for decode steps (`cuda_graphs`), the weight-streaming
GEMV plan (`gemv_plan`), the engine that drives a torch-free scheduler with it (`engine`),
start-up and checkpoints (`setup`, `checkpoint`, `model_presets`), step timing and calibration
(`step_timer`, `calibrate`) and the `run` / `calibrate` subcommands (`cli_run`, `cli_calibrate`).

Importing this package imports no torch; its modules do.
"""
