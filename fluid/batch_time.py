"""Batch-time models: how long one iteration (one forward pass over a batch) takes.

Every model predicts a step's time from its `BatchShape`. The fluid benchmark needs the linear
form `τ = d0 + d_kv·(KV tokens touched) + d_new·(new tokens)` (PAPERS.md §1), available from every
model through `linear_coefficients()`; table-like models are linearised over an operating range.

Glossary (paper symbols): d0 = `d0_s`, d1 = `d_kv_s_per_token` of the affine model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from fluid.errors import InputError


@dataclass(frozen=True, slots=True)
class BatchShape:
    """The composition of one step, all that a batch-time model may look at.

    kv_tokens counts the KV tokens the step touches, the paper's measure: for every sequence in
    the batch, its cached context plus the tokens it computes now (a prefill of l tokens touches
    l; decode stage s of a type with prompt l touches l + s).
    """

    new_tokens: int  # tokens computed this step: prefill chunk tokens + one per decode
    kv_tokens: int  # Σ over sequences of (cached context + new tokens)
    num_decodes: int  # sequences computing exactly one token from a complete prefix
    num_prefills: int  # sequences computing a prefill chunk
    prefill_attention_pairs: int = 0  # Σ chunk·(context + chunk) over prefill chunks (attention work)

    @property
    def num_seqs(self) -> int:
        return self.num_decodes + self.num_prefills


@runtime_checkable
class BatchTimeModel(Protocol):
    kind: str

    def step_time_s(self, shape: BatchShape) -> float: ...

    def linear_coefficients(self) -> tuple[float, float, float]:
        """(d0_s, d_kv_s_per_token, d_new_s_per_token) of the linear form used by the fluid model."""
        ...

    def to_dict(self) -> dict: ...


def _check_nonneg_finite(value: float, field: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"must be a number, got {value!r}", field=field)
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        need = "positive" if positive else "non-negative"
        raise InputError(f"must be a finite {need} number of seconds, got {value!r}", field=field)
    return float(value)


@dataclass(frozen=True, slots=True)
class Linear3BatchTime:
    """τ = d0 + d_kv·(KV tokens touched) + d_new·(new tokens computed)."""

    d0_s: float
    d_kv_s_per_token: float
    d_new_s_per_token: float = 0.0
    kind: str = "linear3"

    def __post_init__(self) -> None:
        _check_nonneg_finite(self.d0_s, "batch_time.d0_s", positive=True)
        _check_nonneg_finite(self.d_kv_s_per_token, "batch_time.d_kv_s_per_token")
        _check_nonneg_finite(self.d_new_s_per_token, "batch_time.d_new_s_per_token")

    def step_time_s(self, shape: BatchShape) -> float:
        return self.d0_s + self.d_kv_s_per_token * shape.kv_tokens + self.d_new_s_per_token * shape.new_tokens

    def linear_coefficients(self) -> tuple[float, float, float]:
        return (self.d0_s, self.d_kv_s_per_token, self.d_new_s_per_token)

    def to_dict(self) -> dict:
        return {
            "kind": "linear3",
            "d0_s": self.d0_s,
            "d_kv_s_per_token": self.d_kv_s_per_token,
            "d_new_s_per_token": self.d_new_s_per_token,
        }


@dataclass(frozen=True, slots=True)
class AffineBatchTime:
    """The paper's model (arXiv 2504.11320): τ = d0 + d1·(KV tokens touched)."""

    d0_s: float
    d1_s_per_token: float
    kind: str = "affine"

    def __post_init__(self) -> None:
        _check_nonneg_finite(self.d0_s, "batch_time.d0_s", positive=True)
        _check_nonneg_finite(self.d1_s_per_token, "batch_time.d1_s_per_token")

    def step_time_s(self, shape: BatchShape) -> float:
        return self.d0_s + self.d1_s_per_token * shape.kv_tokens

    def linear_coefficients(self) -> tuple[float, float, float]:
        return (self.d0_s, self.d1_s_per_token, 0.0)

    def to_dict(self) -> dict:
        return {"kind": "affine", "d0_s": self.d0_s, "d1_s_per_token": self.d1_s_per_token}
