"""Batch-time models: how long one iteration (one forward pass over a batch) takes.

Every model predicts a step's time from its `BatchShape`. The fluid benchmark needs the linear
form `τ = d0 + d_kv·(KV tokens touched) + d_new·(new tokens)` (arXiv 2504.11320, the serving model), available from every
model through `linear_coefficients()`; table-like models are linearised over an operating range.

Glossary (paper symbols): d0 = `d0_s`, d1 = `d1_s_per_token` of the affine model
(= `d_kv_s_per_token` of linear3).

Models: `AffineBatchTime` (the paper's, arXiv 2504.11320), `Linear3BatchTime`,
`StaircaseBatchTime` (GEMM tiles, arXiv 2504.07347), `ProfileBatchTime` (a per-operator table,
in `fluid/batch_time_profile.py`), `StepwiseBatchTime` (the GPU engine's graph buckets, eager
steps and per-sequence terms, fitted by `calibrate`: `fluid/batch_time_stepwise.py`). `batch_time_from_dict` builds any of them from a workload
file's `batch_time` mapping; `fit_linear` (in `fluid/batch_time_fit.py`) fits affine or linear3
from measured rows. Both are importable from here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from fluid.errors import InputError, check_keys, with_source
from fluid.numbers import check_number


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
    # Σ over decodes of the key tiles their attention walks (`decode_key_tiles`); None: not
    # recorded (files written before it, shapes built from totals), estimated by `key_tiles()`
    decode_key_tiles: int | None = None

    @property
    def num_seqs(self) -> int:
        return self.num_decodes + self.num_prefills

    def key_tiles(self) -> int:
        """`decode_key_tiles`, or where it was not recorded its value with every decode at the mean
        decode context these totals imply (exact when the contexts are equal). The prefill
        chunks' KV is Σ(context + chunk) = pairs · P / (new − D), exact for equal chunks."""
        if self.decode_key_tiles is not None:
            return self.decode_key_tiles
        d, p = self.num_decodes, self.num_prefills
        if d == 0:
            return 0
        chunk_tokens = self.new_tokens - d
        prefill_kv = round(self.prefill_attention_pairs * p / chunk_tokens) if p and chunk_tokens > 0 else 0
        context = max(1, round((self.kv_tokens - prefill_kv) / d) - 1)
        return d * decode_key_tiles(context, beside_prefill=p > 0)


#: keys per tile of the engine's decode attention (`runtime.gpu.kernels`: the paged decode
#: kernel's TILE_TOKENS / PART_TOKENS and the variable-length kernel's BLOCK_N)
ATTENTION_KEY_TILE = 64


def reads_key_tiles(model) -> bool:
    """Whether `model`'s step time reads `BatchShape.decode_key_tiles`: a model that says it does
    not (`reads_key_tiles = False`: affine, linear3, a stepwise model without the tile term) lets
    the simulator skip counting them; any other model, a wrapper included, gets them counted."""
    return bool(getattr(model, "reads_key_tiles", True))


def decode_key_tiles(context_tokens: int, *, beside_prefill: bool) -> int:
    """The key tiles one decode's attention walks on the engine's kernels. Its cost is a staircase
    in the context, not a line: on the H200 (run 23's grid) a mixed step of 96 decodes beside one
    48-token prompt ran 8.31 ms at contexts 63 and 64 (2 tiles each), 8.54 ms at 70 and 8.89 ms at
    128 (3), 9.15 ms at 129 (4); the KV-token slope gives 0.04 ms from 64 to 70
    (docs/fidelity-h200-latency-gap.md).

    - In a decode-only step the paged decode kernel walks the context and the new token's key,
      written to the pool first: ⌈(context + 1) / 64⌉ tiles.
    - Beside a prefill chunk (a graphed mixed step) the variable-length kernel walks the cached
      context (⌈context / 64⌉ tiles) and then the fresh key in a tile of its own: one more, so a
      context of 64 walks 2 tiles and one of 65–128 walks 3."""
    t = ATTENTION_KEY_TILE
    if beside_prefill:
        return -(-context_tokens // t) + 1
    return (context_tokens + t) // t


@runtime_checkable
class BatchTimeModel(Protocol):
    kind: str

    def step_time_s(self, shape: BatchShape) -> float: ...

    def linear_coefficients(self) -> tuple[float, float, float]:
        """(d0_s, d_kv_s_per_token, d_new_s_per_token) of the linear form used by the fluid model."""
        ...

    def to_dict(self) -> dict: ...


# A coefficient beyond this (a step of more than 11 days per token) is a typo, and products of
# such values with token counts overflow to infinity inside the fluid formulas.
MAX_COEFFICIENT_S = 1e6


def _check_nonneg_finite(value: float, field: str, *, positive: bool = False) -> float:
    value = check_number(value, field, minimum=0, strict_minimum=positive, unit="of seconds")
    # the cap has its own message: a value over it is almost always in the wrong unit
    check_number(value, field, maximum=MAX_COEFFICIENT_S, unit="seconds", hint="; check the units (seconds, not ms or µs)")
    return float(value)


@dataclass(frozen=True, slots=True)
class Linear3BatchTime:
    """τ = d0 + d_kv·(KV tokens touched) + d_new·(new tokens computed)."""

    d0_s: float
    d_kv_s_per_token: float
    d_new_s_per_token: float = 0.0
    kind: str = "linear3"
    #: the decodes' key tiles are not in the model: a simulation need not count them (`reads_key_tiles`)
    reads_key_tiles: ClassVar[bool] = False

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
    reads_key_tiles: ClassVar[bool] = False

    def __post_init__(self) -> None:
        _check_nonneg_finite(self.d0_s, "batch_time.d0_s", positive=True)
        _check_nonneg_finite(self.d1_s_per_token, "batch_time.d1_s_per_token")

    def step_time_s(self, shape: BatchShape) -> float:
        return self.d0_s + self.d1_s_per_token * shape.kv_tokens

    def linear_coefficients(self) -> tuple[float, float, float]:
        return (self.d0_s, self.d1_s_per_token, 0.0)

    def to_dict(self) -> dict:
        return {"kind": "affine", "d0_s": self.d0_s, "d1_s_per_token": self.d1_s_per_token}


@dataclass(frozen=True, slots=True)
class StaircaseBatchTime:
    """t = c + a·⌈new_tokens / b0⌉: step time follows GEMM tiles of b0 tokens.

    arXiv 2504.07347 fitted c = 11.28 ms, a = 35.47 ms, b0 = 128 (CodeLlama-34B on an A100);
    the RAD/SLAI schedulers (arXiv 2508.01002) are designed around this shape. KV tokens read
    do not enter. Its linear form is a least-squares fit over an operating range (see
    `fluid.batch_time_fit.linearise`).
    """

    c_s: float
    a_s: float
    tile_tokens: int = 128
    kind: str = "staircase"

    def __post_init__(self) -> None:
        _check_nonneg_finite(self.c_s, "batch_time.c_s", positive=True)
        _check_nonneg_finite(self.a_s, "batch_time.a_s")
        check_number(self.tile_tokens, "batch_time.tile_tokens", integer=True, minimum=1, unit="number of tokens")

    def step_time_s(self, shape: BatchShape) -> float:
        return self.c_s + self.a_s * math.ceil(shape.new_tokens / self.tile_tokens)

    def linear_coefficients(self) -> tuple[float, float, float]:
        from fluid.batch_time_fit import linearise

        return linearise(self)

    def to_dict(self) -> dict:
        return {"kind": "staircase", "c_s": self.c_s, "a_s": self.a_s, "tile_tokens": self.tile_tokens}


# kind -> (allowed keys, required keys)
_BATCH_TIME_KEYS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "affine": (("kind", "d0_s", "d1_s_per_token"), ("d0_s", "d1_s_per_token")),
    "linear3": (("kind", "d0_s", "d_kv_s_per_token", "d_new_s_per_token"), ("d0_s", "d_kv_s_per_token")),
    "staircase": (("kind", "c_s", "a_s", "tile_tokens"), ("c_s", "a_s")),
    "stepwise": (
        ("kind", "coefficients", "decode_buckets", "token_buckets", "max_prefills", "max_decodes", "linear", "knee_tokens",
         "decode_knots", "decode_knot_s"),
        ("coefficients", "decode_buckets", "token_buckets", "max_prefills", "max_decodes"),
    ),
    "profile": (
        (
            "kind",
            "mlp_csv",
            "table",
            "num_layers",
            "attn_s_per_kv_token",
            "attn_s_per_prefill_pair",
            "overhead_s",
        ),
        (),
    ),
}
BATCH_TIME_KINDS = tuple(_BATCH_TIME_KEYS)


def batch_time_from_dict(
    data: dict, *, source: str | None, field: str = "batch_time", base_dir: str | Path | None = None
) -> BatchTimeModel:
    """Build a batch-time model from its mapping, e.g. `{kind: affine, d0_s: .., d1_s_per_token: ..}`.

    Unknown keys are rejected with the closest valid one; every error names `source` and the
    field path. `base_dir` resolves a profile's relative `mlp_csv` path (default: the folder of
    `source` when it is a file).
    """
    if not isinstance(data, dict):
        raise InputError(f"must be a mapping with a 'kind' ({', '.join(BATCH_TIME_KINDS)}), got {data!r:.80}", source=source, field=field)
    kind = data.get("kind")
    if kind not in _BATCH_TIME_KEYS:
        from fluid.errors import closest_key_hint

        hint = closest_key_hint(kind, BATCH_TIME_KINDS) if isinstance(kind, str) else ""
        raise InputError(f"unknown or missing kind {kind!r}; use one of {', '.join(BATCH_TIME_KINDS)}{hint}", source=source, field=f"{field}.kind")
    allowed, required = _BATCH_TIME_KEYS[kind]
    check_keys(data, allowed=allowed, required=required, source=source, field=field)
    args = {k: v for k, v in data.items() if k != "kind"}
    try:
        if kind == "affine":
            return AffineBatchTime(**args)
        if kind == "linear3":
            return Linear3BatchTime(**args)
        if kind == "staircase":
            return StaircaseBatchTime(**args)
        if kind == "stepwise":
            from fluid.batch_time_stepwise import stepwise_from_dict

            return stepwise_from_dict(args, field=field)
        from fluid.batch_time_profile import profile_from_dict

        if base_dir is None and source and Path(source).is_file():
            base_dir = Path(source).parent
        return profile_from_dict(args, source=source, field=field, base_dir=base_dir)
    except InputError as err:
        if err.field and err.field.startswith("batch_time.") and field != "batch_time":
            err = InputError(err.detail, source=source, field=field + err.field[len("batch_time"):])
        raise with_source(err, source) from None


def __getattr__(name: str):
    # PEP 562: the profile model and the fitting code live in their own modules (one idea per
    # file) but are part of this module's public face; loaded on first use.
    if name == "ProfileBatchTime":
        from fluid.batch_time_profile import ProfileBatchTime

        return ProfileBatchTime
    if name in ("fit_linear", "FitReport", "linearise"):
        from fluid import batch_time_fit

        return getattr(batch_time_fit, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
