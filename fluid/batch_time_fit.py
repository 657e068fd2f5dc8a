"""Least-squares fits of the linear batch-time forms, and linearisation of table models.

`fit_linear(rows, kind)` fits `affine` (τ = d0 + d1·KV) or `linear3` (τ = d0 + d_kv·KV + d_new·new)
to measured `(BatchShape, time_s)` rows and reports MAPE and R². Coefficients are kept
non-negative (a negative per-token cost is noise, not physics) by refitting without any column
that comes out negative, a small active-set method in numpy.

`linearise(model)` gives the `(d0, d_kv, d_new)` that the fluid model (arXiv 2504.11320) needs
from a non-linear model (staircase, profile): a linear3 fit of the model's own predictions over
`OPERATING_SHAPES`, memoised per model.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

from fluid.batch_time import AffineBatchTime, BatchShape, BatchTimeModel, Linear3BatchTime, decode_key_tiles
from fluid.errors import InputError

FIT_KINDS = ("affine", "linear3")


@dataclass(frozen=True, slots=True)
class FitReport:
    """A fitted model and how well it explains the rows it was fitted on."""

    model: AffineBatchTime | Linear3BatchTime
    mape: float  # mean absolute percentage error, as a fraction (0.05 = 5 %)
    r2: float  # coefficient of determination
    num_rows: int


def _design(shapes: list[BatchShape], kind: str) -> np.ndarray:
    kv = np.array([s.kv_tokens for s in shapes], dtype=np.float64)
    ones = np.ones_like(kv)
    if kind == "affine":
        return np.column_stack([ones, kv])
    new = np.array([s.new_tokens for s in shapes], dtype=np.float64)
    return np.column_stack([ones, kv, new])


def _nonneg_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares with coefficients ≥ 0: drop the most negative column and refit until none is."""
    active = list(range(a.shape[1]))
    coef = np.zeros(a.shape[1])
    while active:
        scale = np.abs(a[:, active]).max(axis=0)
        scale[scale == 0] = 1.0  # columns are scaled so tokens (1e5) and the constant (1) compare
        sol = np.linalg.lstsq(a[:, active] / scale, y, rcond=None)[0] / scale
        if (sol >= 0).all():
            coef[:] = 0.0
            coef[active] = sol
            return coef
        active.pop(int(np.argmin(sol)))
    return coef


def fit_linear(rows: Iterable[tuple[BatchShape, float]], kind: str = "affine") -> FitReport:
    """Fit an affine or linear3 model to `(BatchShape, time_s)` rows by least squares."""
    if kind not in FIT_KINDS:
        raise InputError(f"fit kind must be one of {', '.join(FIT_KINDS)}, got {kind!r}", field="kind")
    rows = list(rows)
    need = 2 if kind == "affine" else 3
    if len(rows) < need:
        raise InputError(f"a {kind} fit needs at least {need} rows, got {len(rows)}; measure more batches", field="rows")
    shapes = [r[0] for r in rows]
    y = np.array([r[1] for r in rows], dtype=np.float64)
    if not np.isfinite(y).all() or (y <= 0).any():
        bad = next(i for i, t in enumerate(y) if not (np.isfinite(t) and t > 0))
        raise InputError(f"every measured time must be a finite positive number of seconds; row {bad} has {y[bad]!r}", field=f"rows[{bad}]")
    a = _design(shapes, kind)
    coef = _nonneg_lstsq(a, y)
    if coef[0] <= 0:
        raise InputError(
            "the fitted constant d0 is not positive: the rows do not show a fixed per-step cost; "
            "include small batches in the measurements",
            field="rows",
        )
    model = AffineBatchTime(*map(float, coef)) if kind == "affine" else Linear3BatchTime(*map(float, coef))
    pred = a @ coef
    mape = float(np.mean(np.abs(pred - y) / y))
    # R² of the times relative to their mean: the same in any unit, and no squared deviation
    # underflows (rows of 1e-170 s had ss_tot = 0 and R² 0 for a fit of R² 0.25). Equal times have
    # no spread, whatever their float mean: three rows of 0.1 s average 0.10000000000000002, and
    # the sum of squares about it, 5.8e-34, made the R² of their perfect affine fit −3
    mean = y.mean()
    ss_res = float(np.sum(((y - pred) / mean) ** 2))
    ss_tot = float(np.sum(((y - mean) / mean) ** 2)) if y.min() < y.max() else 0.0
    # equal times (ss_tot = 0): R² is 1 when the fit reproduces them, up to rounding (a fitted
    # d0 of 0.020000000000000004 for rows of 0.02 s leaves ss_res ~1e-34, not 0), else 0
    exact = bool(np.all(np.abs(pred - y) <= 1e-12 * y))
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if exact else 0.0)
    return FitReport(model, mape, r2, len(rows))


def _operating_shapes() -> tuple[BatchShape, ...]:
    """Representative steps of a continuous-batching server (one Sarathi-style mixed batch under a
    512-token budget): b decodes with c cached tokens each, plus optionally one prefill chunk of
    k fresh tokens. b ∈ {1, 4, 16, 64, 128, 256}, c ∈ {128, 512, 1024}, k ∈ {0, 128, 256, 512}."""
    shapes = []
    for b, c, k in itertools.product((1, 4, 16, 64, 128, 256), (128, 512, 1024), (0, 128, 256, 512)):
        shapes.append(
            BatchShape(
                new_tokens=b + k,
                kv_tokens=b * (c + 1) + k,
                num_decodes=b,
                num_prefills=1 if k else 0,
                prefill_attention_pairs=k * k,
                decode_key_tiles=b * decode_key_tiles(c, beside_prefill=k > 0),
            )
        )
    return tuple(shapes)


OPERATING_SHAPES = _operating_shapes()


@lru_cache(maxsize=64)
def linearise(model: BatchTimeModel) -> tuple[float, float, float]:
    """(d0_s, d_kv_s_per_token, d_new_s_per_token): a linear3 fit of `model` over OPERATING_SHAPES."""
    report = fit_linear(((s, model.step_time_s(s)) for s in OPERATING_SHAPES), kind="linear3")
    return report.model.linear_coefficients()
