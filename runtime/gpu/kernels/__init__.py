"""Triton and fused torch kernels used by the GPU forward (attention, RMSNorm/RoPE/SiLU, GEMV)."""
