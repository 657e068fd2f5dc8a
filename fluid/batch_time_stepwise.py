"""A batch-time model of the GPU engine as it executes steps, and its robust fit with held-out error.

linear3 (τ = d0 + d_kv·KV + d_new·new) misses what the engine's steps show: a step replayed from
a CUDA graph costs what its padded bucket costs, an eager step pays host work per launch, and
prefill attention grows with chunk × (context + chunk) while decode attention grows with KV read.
The stepwise model adds those terms:

    τ = c0 + c_kv·KV + c_new·new + c_pad·padded + c_dec·D + c_pf·P + c_pair·pairs
        + eager·(c_eager + c_eager_seq·(D + P)) + c_mixdec·[P > 0]·D + c_dp·D·P
        + c_knee·max(0, padded − knee_tokens) + c_small·[decode graph of 8–24 rows]
        + c_run·pairs / (new − D)   (steps with a prefill chunk)
        + c_tile·(the decodes' key tiles, `fluid.batch_time.decode_key_tiles`)

with `padded` the token count the step's graph runs (the decode bucket of D for decode-only steps,
the token bucket of `new` for prefill / mixed steps that fit, `new` when eager) and `eager` 1 when
the step is outside every bucket. The buckets are the engine's (recorded by `calibrate`). The
last two terms are what the live steps of the H200 runs asked for (docs/fidelity-h200-run6.md): a
decode beside a prefill chunk costs more than one in a decode-only step (it goes through the
mixed graph's variable-length decode launch, and its scheduler work is the admission step's), and
the admission work grows with decodes × prefills. The knee is the GEMMs' turn from reading the
weights (a step of 16–128 tokens costs about the same) to compute (≈ 25 µs per token past ~256
tokens on the H200, Llama-2-7B bf16): one slope in `padded` cannot follow both, so the step pays
a second slope past `knee_tokens`, chosen by k-fold from `KNEE_CANDIDATES` on the rows a fit sees.
`small_decode_s` is the decode graph of 8–24 rows being slower than its neighbours (cuBLAS picks
other GEMM kernels there; H200 grid: 16 × 48 costs 5.28 ms, 32 × 48 5.01 ms). Files written
before a term existed read it as 0 (`benchmarks/batch_time_heldout.py` shows what each term buys).
`prefill_run_s_per_token` is the prefill attention's critical path: a query tile streams the
whole context before it plus its chunk, and a short chunk behind a long prefix has too few tiles
to fill the GPU, so its time follows that run length, not the total work (`pair_s`). The mean run
over the step's prefill tokens, pairs / (new − D), is the run itself for one chunk (H200 grid: a
128-token chunk costs 5.44 ms after 256 cached tokens and 8.33 ms after 3,000, about 1 µs per
prefix token, where `pair_s` alone predicted 6.4 ms).
`decode_tile_s` is a decode's attention walking its keys 64 at a time: its cost is a staircase in
the context, which the KV-token slope cannot follow where contexts sit just past a tile edge. On
the H200 (run 23's grid) a graphed mixed step of 96 decodes beside one 48-token prompt ran 8.31 ms
at contexts 63 and 64 (2 tiles each beside a prefill), 8.54 ms at 70 and 8.89 ms at 128 (3 tiles),
9.15 ms at 129 (4). The live mixed steps of vLLM-v1 and Sarathi-Serve near capacity (64–120
decodes at contexts about 67 beside whole prompts) ran 1.03–1.07× the model without the term
(runs 20–22) and 1.01–1.03× with it (run 23; docs/fidelity-h200-latency-gap.md).
`decode_knots` / `decode_knot_s` (optional; a fit asked for the curve picks its knots): what a
decode-only graph of a given size costs beyond the GEMM trend every step shares (the `padded`
slope and knee: a decode graph of B rows and a prefill of B tokens run the same products), as a
curve through one non-negative cost per knot (the decode graph sizes the fit's rows measured),
linear between knots, the first knot's below it and the last's past it; it replaces the one
`small_decode_s` bump for 8–24 rows. cuBLAS picks a kernel per graph size, so neighbouring graphs
cost what no one slope gives: on the H200 grid 48 × 256 ran 8 % above the slope-and-bump model and
8 × 48 7 % below it, alike on four machines (`benchmarks/calibration_residuals.py`); with the curve
the nested k-fold held-out error of six machines' calibrations fell by 0.08–0.57 points
(`benchmarks/decode_curve_heldout.py`).
Coefficients are fitted by bounded least squares on relative error (`scipy.optimize.lsq_linear`,
every coefficient ≥ 0); `fit_stepwise` reports in-sample and k-fold held-out MAPE per region of
the grid, and the linear3 model the fluid benchmark uses, fitted to the stepwise model over the
measured range, with its error against both.
"""

from __future__ import annotations

import bisect
import dataclasses
from dataclasses import dataclass

import numpy as np

from fluid.batch_time import BatchShape, Linear3BatchTime, _check_nonneg_finite
from fluid.errors import InputError
from fluid.numbers import check_number

TERMS = ("c0_s", "kv_s_per_token", "new_s_per_token", "padded_s_per_token", "decode_s_per_seq", "prefill_s_per_seq",
         "pair_s", "eager_s", "eager_s_per_seq", "mixed_decode_s_per_seq", "decode_prefill_s", "knee_s_per_token", "small_decode_s",
         "prefill_run_s_per_token", "decode_tile_s")
_TILE_TERM = TERMS.index("decode_tile_s")
#: terms a stored model may lack (written before they were added): they read as 0
OPTIONAL_TERMS = ("mixed_decode_s_per_seq", "decode_prefill_s", "knee_s_per_token", "small_decode_s", "prefill_run_s_per_token",
                  "decode_tile_s")
#: where the padded-token slope may turn (tokens); a fit picks one by k-fold on its own rows
KNEE_CANDIDATES = (128, 192, 256, 384, 512)
DEFAULT_KNEE_TOKENS = 256
#: decode graph sizes (rows) whose GEMMs run slower than their neighbours' (`small_decode_s`)
SMALL_DECODE_ROWS = (8, 24)
#: the terms the scheduler's host work (scheduler call, step bookkeeping) adds to, fitted on live steps
HOST_TERMS = ("c0_s", "decode_s_per_seq", "prefill_s_per_seq", "mixed_decode_s_per_seq")


@dataclass(frozen=True, slots=True)
class StepwiseBatchTime:
    coefficients: tuple[float, ...]  # in TERMS order
    decode_buckets: tuple[int, ...]  # decode-only graph batch sizes
    token_buckets: tuple[int, ...]  # prefill / mixed graph token counts
    max_prefills: int
    max_decodes: int
    linear: tuple[float, float, float] | None = None  # (d0, d_kv, d_new) fitted to this model over its range
    knee_tokens: int = DEFAULT_KNEE_TOKENS
    decode_knots: tuple[int, ...] = ()  # decode graph rows where the GEMM curve has a cost of its own
    decode_knot_s: tuple[float, ...] = ()  # that cost at each knot
    kind: str = "stepwise"

    @property
    def reads_key_tiles(self) -> bool:
        """Whether the decodes' key tiles change its step times (`fluid.batch_time.reads_key_tiles`)."""
        return self.coefficients[_TILE_TERM] > 0

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
        if isinstance(self.knee_tokens, bool) or not isinstance(self.knee_tokens, int) or self.knee_tokens <= 0:
            raise InputError(f"must be a positive token count, got {self.knee_tokens!r}", field="batch_time.knee_tokens")
        k = self.decode_knots
        if any(isinstance(x, bool) or not isinstance(x, int) or x <= 0 for x in k) or list(k) != sorted(set(k)):
            raise InputError(f"must be strictly increasing positive row counts, got {k!r}", field="batch_time.decode_knots")
        if len(self.decode_knot_s) != len(k):
            raise InputError(f"needs one cost per knot ({len(k)}), got {len(self.decode_knot_s)}", field="batch_time.decode_knot_s")
        for i, c in enumerate(self.decode_knot_s):
            _check_nonneg_finite(c, f"batch_time.decode_knot_s[{i}]")

    def features(self, shape: BatchShape) -> list[float]:
        d, p, new = shape.num_decodes, shape.num_prefills, shape.new_tokens
        padded, eager = new, 1.0
        if p == 0 and self.decode_buckets and d <= self.decode_buckets[-1]:
            padded, eager = self.decode_buckets[bisect.bisect_left(self.decode_buckets, d)], 0.0
        elif 0 < p <= self.max_prefills and d <= self.max_decodes and self.token_buckets and new <= self.token_buckets[-1]:
            padded, eager = self.token_buckets[bisect.bisect_left(self.token_buckets, new)], 0.0
        small = 1.0 if p == 0 and not eager and SMALL_DECODE_ROWS[0] <= padded <= SMALL_DECODE_ROWS[1] else 0.0
        run = shape.prefill_attention_pairs / (new - d) if p and new > d else 0.0
        if self.decode_knots and p == 0 and not eager:  # the curve's knots replace the one 8-24-row bump (`knot_weights`)
            small = 0.0
        return [1.0, shape.kv_tokens, new, padded, d, p, shape.prefill_attention_pairs, eager, eager * (d + p), d if p else 0, d * p,
                max(0.0, padded - self.knee_tokens), small, run, shape.key_tiles()]

    def knot_weights(self, shape: BatchShape) -> list[float]:
        """Where a decode-only graph step sits on the decode curve: the weights of the two knots around
        its graph size (1 at a knot; the first knot's cost below it, the last's past it); all 0 for
        any other step or without knots."""
        knots = self.decode_knots
        w = [0.0] * len(knots)
        d = shape.num_decodes
        if not knots or shape.num_prefills or not self.decode_buckets or d > self.decode_buckets[-1]:
            return w
        rows = self.decode_buckets[bisect.bisect_left(self.decode_buckets, d)]
        j = bisect.bisect_right(knots, rows) - 1  # the last knot at or below this graph size
        if j < 0:
            w[0] = 1.0
        elif rows >= knots[-1]:
            w[-1] = 1.0
        else:
            frac = (rows - knots[j]) / (knots[j + 1] - knots[j])
            w[j], w[j + 1] = 1.0 - frac, frac
        return w

    def step_time_s(self, shape: BatchShape) -> float:
        t = float(np.dot(self.coefficients, self.features(shape)))
        if self.decode_knots:
            t += float(np.dot(self.decode_knot_s, self.knot_weights(shape)))
        return t

    def linear_coefficients(self) -> tuple[float, float, float]:
        if self.linear is not None:
            return self.linear
        from fluid.batch_time_fit import linearise

        return linearise(self)

    def to_dict(self) -> dict:
        out = {"kind": "stepwise", "coefficients": dict(zip(TERMS, self.coefficients)), "decode_buckets": list(self.decode_buckets),
               "token_buckets": list(self.token_buckets), "max_prefills": self.max_prefills, "max_decodes": self.max_decodes,
               "knee_tokens": self.knee_tokens}
        if self.decode_knots:
            out["decode_knots"], out["decode_knot_s"] = list(self.decode_knots), list(self.decode_knot_s)
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
    knee = args.get("knee_tokens", DEFAULT_KNEE_TOKENS)  # a file without the knee term: its coefficient is 0 anyway
    check_number(knee, f"{field}.knee_tokens", integer=True, minimum=1)
    knots, knot_s = args.get("decode_knots", []), args.get("decode_knot_s", [])  # files before the curve have neither
    if not isinstance(knots, list) or not isinstance(knot_s, list):
        raise InputError(f"decode_knots and decode_knot_s must be lists, got {knots!r} and {knot_s!r}", field=f"{field}.decode_knots")
    for i, c in enumerate(knot_s):
        check_number(c, f"{field}.decode_knot_s[{i}]", minimum=0)
    return StepwiseBatchTime(tuple(coef[t] for t in TERMS), tuple(args["decode_buckets"]), tuple(args["token_buckets"]),
                             args["max_prefills"], args["max_decodes"], linear, knee, tuple(knots), tuple(float(c) for c in knot_s))


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
    unused = scale == 0
    scale[unused] = 1.0
    res = lsq_linear(w / scale, np.ones_like(y), bounds=(0.0, np.inf), method="bvls")
    # BVLS can return a bound-active coefficient a rounding error below 0 (-9e-23 seen): it is 0
    return _no_evidence_is_zero(np.maximum(res.x, 0.0) / scale, unused)


def _no_evidence_is_zero(coef: np.ndarray, unused: np.ndarray) -> np.ndarray:
    """A term no row exercises (an all-zero column) is 0: BVLS leaves such a coefficient wherever
    its start put it (non-zero in 4 of 10 random trials), and the model would then charge it on
    steps the fit never saw (host terms fitted on runs without prefills, say)."""
    coef[unused] = 0.0
    return coef


def _linear3_to(rows, target: np.ndarray) -> Linear3BatchTime:
    """linear3 fitted to `target` step times over the rows' shapes, on relative error like the
    stepwise fit (so the small steps that show d0 count as much as the large ones), every
    coefficient ≥ 0."""
    lin_a = np.array([[1.0, s.kv_tokens, s.new_tokens] for s, _, _ in rows], dtype=np.float64)
    d0, d_kv, d_new = (float(c) for c in _solve(lin_a, target))
    if d0 <= 0:
        raise InputError("the linear3 fitted to the stepwise model has no fixed per-step cost (d0 = 0); include small steps in the measurements", field="rows")
    return Linear3BatchTime(d0, d_kv, d_new)


def _design(rows, probe: StepwiseBatchTime, knee: int, knots: tuple[int, ...] = ()) -> np.ndarray:
    """One row of features per step (TERMS order), then its knot weights when there are knots."""
    probe = StepwiseBatchTime(probe.coefficients, probe.decode_buckets, probe.token_buckets, probe.max_prefills, probe.max_decodes,
                              knee_tokens=knee, decode_knots=knots, decode_knot_s=(0.0,) * len(knots))
    return np.array([probe.features(r[0]) + probe.knot_weights(r[0]) for r in rows], dtype=np.float64)


def _decode_knots(rows, probe: StepwiseBatchTime) -> tuple[int, ...]:
    """The decode graph sizes the rows measured (decode-only steps inside the largest decode graph):
    the GEMM curve's knots, each with rows of its own."""
    b = probe.decode_buckets
    return tuple(sorted({b[bisect.bisect_left(b, r[0].num_decodes)] for r in rows
                         if r[0].num_prefills == 0 and b and 0 < r[0].num_decodes <= b[-1]}))


def _model(coef: np.ndarray, probe: StepwiseBatchTime, knee: int, knots: tuple[int, ...]) -> StepwiseBatchTime:
    n = len(TERMS)
    return StepwiseBatchTime(tuple(float(c) for c in coef[:n]), probe.decode_buckets, probe.token_buckets, probe.max_prefills,
                             probe.max_decodes, knee_tokens=knee, decode_knots=knots, decode_knot_s=tuple(float(c) for c in coef[n:]))


def _folds(groups: list, folds: int, seed: int) -> np.ndarray:
    """Fold index per row; rows of one group (a grid point's repeats) share a fold."""
    keys = sorted(set(groups), key=repr)
    order = np.random.default_rng(seed).permutation(len(keys))
    fold_of = {keys[j]: k % folds for k, j in enumerate(order)}
    return np.array([fold_of[g] for g in groups])


def _pick_knee(a_by_knee: dict[int, np.ndarray], y: np.ndarray, groups: list, folds: int = 5, seed: int = 1) -> int:
    """The knee whose fit predicts rows it did not see best (k-fold on these rows only)."""
    fold = _folds(groups, min(folds, len(set(groups))), seed)
    best, best_err = DEFAULT_KNEE_TOKENS, np.inf
    for knee, a in a_by_knee.items():
        pred = np.empty_like(y)
        for k in set(fold.tolist()):
            test = fold == k
            pred[test] = a[test] @ _solve(a[~test], y[~test])
        err = float(np.mean(np.abs(pred - y) / y))
        if err < best_err - 1e-12:
            best, best_err = knee, err
    return best


def fit_coefficients(rows: list[tuple[BatchShape, float]], *, decode_buckets, token_buckets, max_prefills: int, max_decodes: int,
                     knee_tokens: int | None = None, decode_curve: bool = False) -> StepwiseBatchTime:
    """The stepwise model fitted to `(shape, measured time_s)` rows, nothing else (a held-out fit).
    `knee_tokens` None: picked from KNEE_CANDIDATES by k-fold over these rows (a shape's repeats in one fold).
    `decode_curve`: the decode graphs' GEMMs as a curve through the graph sizes these rows measured."""
    probe = StepwiseBatchTime((0.0,) * len(TERMS), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)
    y = np.array([t for _, t in rows], dtype=np.float64)
    knots = _decode_knots(rows, probe) if decode_curve else ()
    if knee_tokens is None:
        designs = {k: _design(rows, probe, k, knots) for k in KNEE_CANDIDATES}
        knee_tokens = _pick_knee(designs, y, [s for s, _ in rows])
    return _model(_solve(_design(rows, probe, knee_tokens, knots), y), probe, knee_tokens, knots)


def fit_stepwise(rows: list[tuple[BatchShape, float, str]], *, decode_buckets, token_buckets, max_prefills: int, max_decodes: int,
                 folds: int = 5, seed: int = 0, decode_curve: bool = False) -> StepwiseFit:
    """Fit the stepwise model to `(shape, measured time_s, grid-point label)` rows; a label's first
    word is its region ("decode 64x512" is in region "decode"). The held-out error is nested: each
    fold's fit picks its knee (and with `decode_curve` its knots) from its own rows, so no choice
    ever saw the fold it is scored on."""
    if len(rows) < 2 * len(TERMS):
        raise InputError(f"a stepwise fit needs at least {2 * len(TERMS)} rows, got {len(rows)}; measure more steps", field="rows")
    y = np.array([t for _, t, _ in rows], dtype=np.float64)
    if not np.isfinite(y).all() or (y <= 0).any():
        raise InputError("every measured time must be a finite positive number of seconds", field="rows")
    probe = StepwiseBatchTime((0.0,) * len(TERMS), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)
    knots = _decode_knots(rows, probe) if decode_curve else ()
    designs = {k: _design(rows, probe, k, knots) for k in KNEE_CANDIDATES}
    labels = [lab for _, _, lab in rows]
    knee = _pick_knee(designs, y, labels)
    a = designs[knee]
    coef = _solve(a, y)
    in_sample = float(np.mean(np.abs(a @ coef - y) / y))
    # k-fold over grid points (a point's repeats stay in one fold, so no fold sees its own point)
    fold = _folds(labels, folds, seed)
    pred = np.empty_like(y)
    for k in range(folds):
        test = fold == k
        if not test.any():
            continue
        train = ~test
        k_designs = designs
        if decode_curve:  # the knots of the training rows alone
            k_knots = _decode_knots([r for r, t in zip(rows, train) if t], probe)
            k_designs = {kk: _design(rows, probe, kk, k_knots) for kk in KNEE_CANDIDATES} if k_knots != knots else designs
        k_knee = _pick_knee({kk: d[train] for kk, d in k_designs.items()}, y[train], [lab for lab, t in zip(labels, train) if t])
        pred[test] = k_designs[k_knee][test] @ _solve(k_designs[k_knee][train], y[train])
    err = np.abs(pred - y) / y
    region = [lab.split()[0] for lab in labels]
    by_region = {r: float(np.mean(err[[rr == r for rr in region]])) for r in sorted(set(region))}
    worst = max(by_region, key=by_region.get)
    model = _model(coef, probe, knee, knots)
    model_pred = a @ coef
    lin = _linear3_to(rows, model_pred)
    lin_pred = np.array([lin.step_time_s(s) for s, _, _ in rows])
    model = dataclasses.replace(model, linear=lin.linear_coefficients())
    return StepwiseFit(model, in_sample, float(err.mean()), by_region, worst, float(np.mean(np.abs(lin_pred - model_pred) / model_pred)),
                       float(np.mean(np.abs(lin_pred - y) / y)), len(rows), folds)


def host_features(shape: BatchShape) -> list[float]:
    """The host work of a live step the engine step does not include (the scheduler call before it,
    the bookkeeping after it), in HOST_TERMS order: per step, per decode, per prefill, per decode
    beside a prefill (admission steps walk the running requests)."""
    d, p = shape.num_decodes, shape.num_prefills
    return [1.0, d, p, d if p else 0.0]


def fit_host_terms(model: StepwiseBatchTime, steps: list[tuple[BatchShape, float]]) -> tuple[StepwiseBatchTime, dict[str, float]]:
    """`model` (an engine-step model) plus the host terms fitted on live steps `(shape, turn_s)` of
    the same machine: each turn's excess over the engine step, bounded least squares on relative
    error (every host coefficient ≥ 0). Returns the sum model (its linear3 dropped: refit it) and
    the host coefficients."""
    if len(steps) < 2 * len(HOST_TERMS):
        raise InputError(f"host terms need at least {2 * len(HOST_TERMS)} live steps, got {len(steps)}", field="steps")
    t = np.array([x for _, x in steps], dtype=np.float64)
    if not np.isfinite(t).all() or (t <= 0).any():
        raise InputError("every live step time must be a finite positive number of seconds", field="steps")
    engine = np.array([model.step_time_s(s) for s, _ in steps])
    h = np.array([host_features(s) for s, _ in steps], dtype=np.float64)
    host = _solve_target(h, t - engine, t)
    coef = list(model.coefficients)
    for name, c in zip(HOST_TERMS, host):
        coef[TERMS.index(name)] += float(c)
    return dataclasses.replace(model, coefficients=tuple(coef), linear=None), dict(zip(HOST_TERMS, map(float, host)))


def _solve_target(a: np.ndarray, target: np.ndarray, scale_by: np.ndarray) -> np.ndarray:
    """Coefficients ≥ 0 minimising Σ ((a·c − target) / scale_by)²."""
    from scipy.optimize import lsq_linear

    w = a / scale_by[:, None]
    scale = np.abs(w).max(axis=0)
    unused = scale == 0
    scale[unused] = 1.0
    res = lsq_linear(w / scale, target / scale_by, bounds=(0.0, np.inf), method="bvls")
    return _no_evidence_is_zero(np.maximum(res.x, 0.0) / scale, unused)


def with_linear3(model: StepwiseBatchTime, shapes: list[BatchShape]) -> StepwiseBatchTime:
    """`model` with the fluid benchmark's linear3 fitted to it over `shapes`."""
    rows = [(s, 0.0, "") for s in shapes]
    lin = _linear3_to(rows, np.array([model.step_time_s(s) for s in shapes]))
    return dataclasses.replace(model, linear=lin.linear_coefficients())
