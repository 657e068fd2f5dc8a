"""A batch-time model of the GPU engine as it executes steps, and its robust fit with held-out error.

linear3 (τ = d0 + d_kv·KV + d_new·new) misses what the engine's steps show: a step replayed from
a CUDA graph costs what its padded bucket costs, an eager step pays host work per launch, and
prefill attention grows with chunk × (context + chunk) while decode attention grows with KV read.
The stepwise model adds those terms:

    τ = c0 + c_kv·KV + c_new·new + c_pad·padded + c_dec·D + c_pf·P + c_pair·pairs
        + eager·(c_eager + c_eager_seq·(D + P)) + c_mixdec·[P > 0]·D + c_dp·D·P

with `padded` the token count the step's graph runs (the decode bucket of D for decode-only steps,
the token bucket of `new` for prefill / mixed steps that fit, `new` when eager) and `eager` 1 when
the step is outside every bucket. The buckets are the engine's (recorded by `calibrate`). The
last two terms are what the live steps of the H200 runs asked for (docs/fidelity-h200.md): a
decode beside a prefill chunk costs more than one in a decode-only step (it goes through the
mixed graph's variable-length decode launch, and its scheduler work is the admission step's), and
the admission work grows with decodes × prefills. Files written before they existed read as 0.
Coefficients are fitted by bounded least squares on relative error (`scipy.optimize.lsq_linear`,
every coefficient ≥ 0); `fit_stepwise` reports in-sample and k-fold held-out MAPE per region of
the grid, and the linear3 model the fluid benchmark uses, fitted to the stepwise model over the
measured range, with its error against both.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import numpy as np

from fluid.batch_time import BatchShape, Linear3BatchTime, _check_nonneg_finite
from fluid.errors import InputError
from fluid.numbers import check_number

TERMS = ("c0_s", "kv_s_per_token", "new_s_per_token", "padded_s_per_token", "decode_s_per_seq", "prefill_s_per_seq",
         "pair_s", "eager_s", "eager_s_per_seq", "mixed_decode_s_per_seq", "decode_prefill_s")
#: terms a stored model may lack (written before they were added): they read as 0
OPTIONAL_TERMS = ("mixed_decode_s_per_seq", "decode_prefill_s")


@dataclass(frozen=True, slots=True)
class StepwiseBatchTime:
    coefficients: tuple[float, ...]  # in TERMS order
    decode_buckets: tuple[int, ...]  # decode-only graph batch sizes
    token_buckets: tuple[int, ...]  # prefill / mixed graph token counts
    max_prefills: int
    max_decodes: int
    linear: tuple[float, float, float] | None = None  # (d0, d_kv, d_new) fitted to this model over its range
    kind: str = "stepwise"

    def __post_init__(self) -> None:
        if len(self.coefficients) != len(TERMS):
            raise InputError(f"needs {len(TERMS)} coefficients ({', '.join(TERMS)}), got {len(self.coefficients)}", field="batch_time.coefficients")
        for name, c in zip(TERMS, self.coefficients):
            _check_nonneg_finite(c, f"batch_time.coefficients.{name}")
        for name in ("decode_buckets", "token_buckets"):
            b = getattr(self, name)
            if any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in b) or list(b) != sorted(set(b)):
                raise InputError(f"must be strictly increasing positive integers (empty: no graphs), got {b!r}", field=f"batch_time.{name}")
        if self.linear is not None:
            Linear3BatchTime(*self.linear)  # validates

    def features(self, shape: BatchShape) -> list[float]:
        d, p, new = shape.num_decodes, shape.num_prefills, shape.new_tokens
        padded, eager = new, 1.0
        if p == 0 and self.decode_buckets and d <= self.decode_buckets[-1]:
            padded, eager = self.decode_buckets[bisect.bisect_left(self.decode_buckets, d)], 0.0
        elif 0 < p <= self.max_prefills and d <= self.max_decodes and self.token_buckets and new <= self.token_buckets[-1]:
            padded, eager = self.token_buckets[bisect.bisect_left(self.token_buckets, new)], 0.0
        return [1.0, shape.kv_tokens, new, padded, d, p, shape.prefill_attention_pairs, eager, eager * (d + p), d if p else 0, d * p]

    def step_time_s(self, shape: BatchShape) -> float:
        return float(np.dot(self.coefficients, self.features(shape)))

    def linear_coefficients(self) -> tuple[float, float, float]:
        if self.linear is not None:
            return self.linear
        from fluid.batch_time_fit import linearise

        return linearise(self)

    def to_dict(self) -> dict:
        out = {"kind": "stepwise", "coefficients": dict(zip(TERMS, self.coefficients)), "decode_buckets": list(self.decode_buckets),
               "token_buckets": list(self.token_buckets), "max_prefills": self.max_prefills, "max_decodes": self.max_decodes}
        if self.linear is not None:
            out["linear"] = {"d0_s": self.linear[0], "d_kv_s_per_token": self.linear[1], "d_new_s_per_token": self.linear[2]}
        return out


def stepwise_from_dict(args: dict, *, field: str) -> StepwiseBatchTime:
    from fluid.errors import check_keys

    coef = check_keys(args.get("coefficients"), allowed=TERMS, required=[t for t in TERMS if t not in OPTIONAL_TERMS], source=None,
                      field=f"{field}.coefficients")
    coef = {t: 0.0 for t in OPTIONAL_TERMS} | coef
    linear = args.get("linear")
    if linear is not None:
        linear = check_keys(linear, allowed=("d0_s", "d_kv_s_per_token", "d_new_s_per_token"), required=("d0_s", "d_kv_s_per_token", "d_new_s_per_token"), source=None, field=f"{field}.linear")
        linear = (linear["d0_s"], linear["d_kv_s_per_token"], linear["d_new_s_per_token"])
    for key in ("decode_buckets", "token_buckets"):
        if not isinstance(args.get(key), list):
            raise InputError(f"must be a list of token counts, got {args.get(key)!r}", field=f"{field}.{key}")
    for key in ("max_prefills", "max_decodes"):
        check_number(args.get(key), f"{field}.{key}", integer=True, minimum=0)
    return StepwiseBatchTime(tuple(coef[t] for t in TERMS), tuple(args["decode_buckets"]), tuple(args["token_buckets"]),
                             args["max_prefills"], args["max_decodes"], linear)


@dataclass(frozen=True, slots=True)
class StepwiseFit:
    model: StepwiseBatchTime
    in_sample_mape: float
    heldout_mape: float  # k-fold: each row predicted by a fit that never saw it
    heldout_mape_by_region: dict[str, float]
    worst_region: str
    linear_vs_model_mape: float  # the fluid benchmark's linear3 against the stepwise model over the rows' shapes
    linear_vs_measured_mape: float
    num_rows: int
    folds: int

    def to_dict(self) -> dict:
        return {
            "batch_time": self.model.to_dict(), "in_sample_mape": self.in_sample_mape, "heldout_mape": self.heldout_mape,
            "heldout_mape_by_region": self.heldout_mape_by_region, "worst_region": self.worst_region,
            "linear_vs_model_mape": self.linear_vs_model_mape, "linear_vs_measured_mape": self.linear_vs_measured_mape,
            "num_rows": self.num_rows, "folds": self.folds,
        }


def _solve(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients ≥ 0 minimising Σ ((a·c − y) / y)²: relative error, so 1 ms and 100 ms steps count alike."""
    from scipy.optimize import lsq_linear

    w = a / y[:, None]
    scale = np.abs(w).max(axis=0)
    scale[scale == 0] = 1.0
    res = lsq_linear(w / scale, np.ones_like(y), bounds=(0.0, np.inf), method="bvls")
    # BVLS can return a bound-active coefficient a rounding error below 0 (-9e-23 seen): it is 0
    return np.maximum(res.x, 0.0) / scale


def _linear3_to(rows, target: np.ndarray) -> Linear3BatchTime:
    """linear3 fitted to `target` step times over the rows' shapes, on relative error like the
    stepwise fit (so the small steps that show d0 count as much as the large ones), every
    coefficient ≥ 0."""
    lin_a = np.array([[1.0, s.kv_tokens, s.new_tokens] for s, _, _ in rows], dtype=np.float64)
    d0, d_kv, d_new = (float(c) for c in _solve(lin_a, target))
    if d0 <= 0:
        raise InputError("the linear3 fitted to the stepwise model has no fixed per-step cost (d0 = 0); include small steps in the measurements", field="rows")
    return Linear3BatchTime(d0, d_kv, d_new)


def fit_coefficients(rows: list[tuple[BatchShape, float]], *, decode_buckets, token_buckets, max_prefills: int, max_decodes: int) -> StepwiseBatchTime:
    """The stepwise model fitted to `(shape, measured time_s)` rows, nothing else (a held-out fit)."""
    probe = StepwiseBatchTime((0.0,) * len(TERMS), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)
    a = np.array([probe.features(s) for s, _ in rows], dtype=np.float64)
    coef = _solve(a, np.array([t for _, t in rows], dtype=np.float64))
    return StepwiseBatchTime(tuple(float(c) for c in coef), probe.decode_buckets, probe.token_buckets, max_prefills, max_decodes)


def fit_stepwise(rows: list[tuple[BatchShape, float, str]], *, decode_buckets, token_buckets, max_prefills: int, max_decodes: int,
                 folds: int = 5, seed: int = 0) -> StepwiseFit:
    """Fit the stepwise model to `(shape, measured time_s, grid-point label)` rows; a label's first
    word is its region ("decode 64x512" is in region "decode")."""
    if len(rows) < 2 * len(TERMS):
        raise InputError(f"a stepwise fit needs at least {2 * len(TERMS)} rows, got {len(rows)}; measure more steps", field="rows")
    y = np.array([t for _, t, _ in rows], dtype=np.float64)
    if not np.isfinite(y).all() or (y <= 0).any():
        raise InputError("every measured time must be a finite positive number of seconds", field="rows")
    probe = StepwiseBatchTime((0.0,) * len(TERMS), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)
    a = np.array([probe.features(s) for s, _, _ in rows], dtype=np.float64)
    coef = _solve(a, y)
    in_sample = float(np.mean(np.abs(a @ coef - y) / y))
    # k-fold over grid points (a point's repeats stay in one fold, so no fold sees its own point)
    labels = sorted({lab for _, _, lab in rows})
    fold_of = {lab: k % folds for k, lab in enumerate(np.random.default_rng(seed).permutation(labels))}
    fold = np.array([fold_of[lab] for _, _, lab in rows])
    pred = np.empty_like(y)
    for k in range(folds):
        test = fold == k
        pred[test] = a[test] @ _solve(a[~test], y[~test])
    err = np.abs(pred - y) / y
    region = [lab.split()[0] for _, _, lab in rows]
    by_region = {r: float(np.mean(err[[rr == r for rr in region]])) for r in sorted(set(region))}
    worst = max(by_region, key=by_region.get)
    model = StepwiseBatchTime(tuple(float(c) for c in coef), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)
    model_pred = a @ coef
    lin = _linear3_to(rows, model_pred)
    lin_pred = np.array([lin.step_time_s(s) for s, _, _ in rows])
    model = StepwiseBatchTime(model.coefficients, model.decode_buckets, model.token_buckets, max_prefills, max_decodes, lin.linear_coefficients())
    return StepwiseFit(model, in_sample, float(err.mean()), by_region, worst, float(np.mean(np.abs(lin_pred - model_pred) / model_pred)),
                       float(np.mean(np.abs(lin_pred - y) / y)), len(rows), folds)
