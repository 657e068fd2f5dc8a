"""A table batch-time model from a per-operator GPU profile (Vidur's `mlp.csv` format).

    t(step) = overhead + T_non_attention(new tokens)                  (interpolated table)
              + attn_s_per_kv_token · KV tokens touched                  (decode attention reads)
              + attn_s_per_prefill_pair · prefill attention pairs        (prefill attention FLOPs)

T_non_attention(n) is the sum over one layer's operators (norms, QKV and output projections,
RoPE, MLP, residual adds) of their median times at n tokens, times the number of layers, plus the
embedding once; linear interpolation between profiled token counts, and beyond the last one
linear extrapolation with the slope over the table's upper half.
Vidur profiles attention separately (attention.csv, not shipped), so the attention terms are
first-principles defaults for Llama-2-7B on an A100-80GB:
- `attn_s_per_kv_token` = 2.57e-7 s: reading one token's K and V (2·32 layers·32 heads·128·2 B =
  512 KiB) at the A100-80GB's 2.039 TB/s HBM bandwidth (decode attention is bandwidth-bound);
- `attn_s_per_prefill_pair` = 3.36e-12 s: 4·32 layers·4096 = 524,288 FLOPs per (query, key) pair
  (QKᵀ and PV) at half of the A100's 312 TFLOP/s bf16 peak (FlashAttention-2 reaches 50–70 %);
- `overhead_s` = 0: the profile's 1-token time already holds the fixed per-step cost of the
  non-attention kernels; no measurement of the rest (scheduling, sampling) ships with the data.
The fluid model uses its linearisation (`fluid.batch_time_fit.linearise`).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fluid.batch_time import BatchShape, _check_nonneg_finite
from fluid.errors import InputError, check_keys
from fluid.numbers import check_number

PROFILE_DIR = Path(__file__).resolve().parent / "data" / "profiles"
# The shipped table is Llama-2-7B on an A100-80GB, so its default attention terms are too: a decode
# reads each cached token's K and V once (524,288 bytes per token) at the HBM bandwidth
# (2.039 TB/s), and a prefill does 4 · layers · hidden FLOPs per (query, key) pair (QKᵀ and PV) at
# half of the bf16 peak (312 TFLOP/s)
DEFAULT_ATTN_S_PER_KV_TOKEN = 524288 / 2.039e12
DEFAULT_ATTN_S_PER_PREFILL_PAIR = 4 * 32 * 4096 / (0.5 * 312e12)
_EMBEDDING = "emb"


@dataclass(frozen=True, slots=True)
class ProfileBatchTime:
    """Table of whole-model non-attention time against tokens, plus linear attention terms."""

    num_tokens: tuple[int, ...]  # ascending grid of batch token counts
    non_attention_s: tuple[float, ...]  # whole-model non-attention time at each grid point
    attn_s_per_kv_token: float = DEFAULT_ATTN_S_PER_KV_TOKEN
    attn_s_per_prefill_pair: float = DEFAULT_ATTN_S_PER_PREFILL_PAIR
    overhead_s: float = 0.0
    kind: str = "profile"

    def __post_init__(self) -> None:
        n, t = self.num_tokens, self.non_attention_s
        if not isinstance(n, tuple) or not isinstance(t, tuple) or len(n) != len(t) or len(n) < 2:
            raise InputError("the table needs two equal-length tuples with at least 2 points", field="batch_time.table")
        if any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in n) or any(b <= a for a, b in zip(n, n[1:])):
            raise InputError(f"num_tokens must be strictly increasing positive integers, got {n[:8]}...", field="batch_time.table.num_tokens")
        for i, x in enumerate(t):
            _check_nonneg_finite(x, f"batch_time.table.non_attention_s[{i}]", positive=True)
        _check_nonneg_finite(self.attn_s_per_kv_token, "batch_time.attn_s_per_kv_token")
        _check_nonneg_finite(self.attn_s_per_prefill_pair, "batch_time.attn_s_per_prefill_pair")
        _check_nonneg_finite(self.overhead_s, "batch_time.overhead_s")

    def non_attention_time_s(self, new_tokens: int) -> float:
        n, t = self.num_tokens, self.non_attention_s
        if new_tokens > n[-1]:
            # extrapolate with the slope over the table's upper half: the last two points alone
            # are as noisy as one measurement. A half starting exactly at the first point is still
            # inside the table; one below it is not measured, and the table is held flat instead
            half = n[-1] / 2
            slope = (t[-1] - float(np.interp(half, n, t))) / (n[-1] - half) if half >= n[0] else 0.0
            return t[-1] + max(slope, 0.0) * (new_tokens - n[-1])
        return float(np.interp(max(new_tokens, n[0]), n, t))

    def step_time_s(self, shape: BatchShape) -> float:
        return (
            self.overhead_s
            + self.non_attention_time_s(shape.new_tokens)
            + self.attn_s_per_kv_token * shape.kv_tokens
            + self.attn_s_per_prefill_pair * shape.prefill_attention_pairs
        )

    def linear_coefficients(self) -> tuple[float, float, float]:
        from fluid.batch_time_fit import linearise

        return linearise(self)

    def to_dict(self) -> dict:
        return {
            "kind": "profile",
            "table": {"num_tokens": list(self.num_tokens), "non_attention_s": list(self.non_attention_s)},
            "attn_s_per_kv_token": self.attn_s_per_kv_token,
            "attn_s_per_prefill_pair": self.attn_s_per_prefill_pair,
            "overhead_s": self.overhead_s,
        }

    @classmethod
    def from_mlp_csv(cls, path: str | Path, *, num_layers: int, tensor_parallel: int = 1, **attention) -> "ProfileBatchTime":
        """Build from a Vidur `mlp.csv` (`builtin:NAME` reads `fluid/data/profiles/NAME`)."""
        n, t = read_mlp_csv(path, num_layers=num_layers, tensor_parallel=tensor_parallel)
        return cls(n, t, **attention)


def resolve_profile_path(reference: str | Path, base_dir: Path | None = None) -> Path:
    ref = str(reference)
    if ref.startswith("builtin:"):
        path = PROFILE_DIR / ref[len("builtin:"):]
        if not path.is_file():
            names = ", ".join(sorted(p.name for p in PROFILE_DIR.glob("*.csv")))
            raise InputError(f"no built-in profile {ref!r}; built-in profiles: {names}", field="batch_time.mlp_csv")
        return path
    path = Path(ref).expanduser()
    return path if path.is_absolute() or base_dir is None else Path(base_dir) / path


def read_mlp_csv(path: str | Path, *, num_layers: int, tensor_parallel: int = 1) -> tuple[tuple[int, ...], tuple[float, ...]]:
    """(num_tokens, whole-model non-attention seconds) from a Vidur mlp.csv, columns read by name.

    Per-layer time = Σ of `time_stats.<op>.median` (ms) over every operator but the embedding;
    whole model = num_layers × per-layer + embedding. Rows of other tensor-parallel degrees are
    skipped; repeated token counts are averaged.
    """
    import io

    from fluid.file_input import read_text

    p = resolve_profile_path(path)
    handle = io.StringIO(read_text(p, what="profile"), newline="")  # UTF-8 checked, with the line of a bad byte
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        ops = [c for c in header if c.startswith("time_stats.") and c.endswith(".median")]
        if "num_tokens" not in header or not ops:
            raise InputError("not a Vidur mlp.csv: needs num_tokens and time_stats.<op>.median columns", source=f"{p}:1")
        per_tokens: dict[int, list[float]] = {}
        for line_no, row in enumerate(reader, start=2):
            try:
                if int(row.get("num_tensor_parallel_workers") or 1) != tensor_parallel:
                    continue
                tokens = int(row["num_tokens"])
                op_ms = {c.split(".")[1]: float(row[c]) for c in ops}
            except (TypeError, ValueError):
                raise InputError("num_tokens and operator medians must be numbers; fix or delete the row", source=f"{p}:{line_no}") from None
            where = f"{p}:{line_no}"
            check_number(tokens, None, integer=True, minimum=1, what="num_tokens", source=where, hint="; fix or delete the row")
            for op, v in op_ms.items():
                check_number(v, None, minimum=0, what=f"time_stats.{op}.median", unit="(ms)", source=where,
                             hint=f" (num_tokens {tokens}); fix or delete the row")
            layer_ms = sum(v for op, v in op_ms.items() if op != _EMBEDDING)
            total_ms = num_layers * layer_ms + op_ms.get(_EMBEDDING, 0.0)
            per_tokens.setdefault(tokens, []).append(total_ms / 1e3)
    if len(per_tokens) < 2:
        raise InputError(f"fewer than 2 token counts with tensor_parallel={tensor_parallel}", source=str(p))
    grid = tuple(sorted(per_tokens))
    return grid, tuple(float(np.mean(per_tokens[k])) for k in grid)


def profile_from_dict(args: dict, *, source: str | None, field: str, base_dir: Path | None) -> ProfileBatchTime:
    """From `{mlp_csv, num_layers} | {table: {num_tokens, non_attention_s}}` plus optional terms."""
    has_csv, has_table = "mlp_csv" in args, "table" in args
    if has_csv == has_table:
        raise InputError("give exactly one of mlp_csv (a Vidur mlp.csv, with num_layers) or table", source=source, field=field)
    terms = {k: args[k] for k in ("attn_s_per_kv_token", "attn_s_per_prefill_pair", "overhead_s") if k in args}
    if has_csv:
        layers = check_number(args.get("num_layers"), f"{field}.num_layers", integer=True, minimum=1, what="mlp_csv needs num_layers, which",
                              unit="number of model layers", source=source)
        mlp = args["mlp_csv"]
        if not isinstance(mlp, str) or not mlp:
            raise InputError(f"must be a file path or builtin:NAME, got {mlp!r}", source=source, field=f"{field}.mlp_csv")
        path = resolve_profile_path(mlp, base_dir)
        if not path.is_file():
            raise InputError(f"profile file {mlp!r} not found (looked at {path})", source=source, field=f"{field}.mlp_csv")
        return ProfileBatchTime.from_mlp_csv(path, num_layers=layers, **terms)
    if "num_layers" in args:
        raise InputError("num_layers applies to mlp_csv only; a table is whole-model time already", source=source, field=f"{field}.num_layers")
    table = check_keys(args["table"], allowed=("num_tokens", "non_attention_s"), required=("num_tokens", "non_attention_s"), source=source, field=f"{field}.table")
    n, t = table["num_tokens"], table["non_attention_s"]
    if not isinstance(n, list) or not isinstance(t, list):
        raise InputError("num_tokens and non_attention_s must be lists", source=source, field=f"{field}.table")
    return ProfileBatchTime(tuple(n), tuple(t), **terms)
