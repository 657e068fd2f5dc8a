"""Surviving mutants of `benchmarks/mutation.py` that are equivalent: no input can tell them apart.

Each entry: (file, the stripped source line, "original->replacement") and why. A mutant matching an
entry is left out of the score and listed with its reason; an entry that no longer matches any
mutant is harmless (the line changed). Add an entry only with the reason a test cannot fail.
`EQUIVALENTS_AT` adds the column within the stripped line, for a line where the same edit of
another token is not equivalent.
"""

ROOT_OF_F = (
    "the residual's own rounding: f = −θ n_k + n_(k−1) log(1 − p + p e^θ) cancels terms of size θ·n, so near the "
    "root its sign is noise over a relative width up to ~1e-8 where f is flattest; Brent's method returns a point "
    "of that width, which point depending on its iterates. Over 20,000 random (n_(k−1), n_k, p) the start 2·lo and "
    "the mutant's are equally far from the 60-digit root (up to 1.6e-8 relative in the flattest cases): no start is "
    "nearer the root, so no input tells a right answer from a wrong one"
)
CACHE = "a cache's size: only how many parsed results are kept, never what is returned"

EQUIVALENTS: dict[tuple[str, str, str], str] = {
    ('fluid/batch_time_fit.py', '@lru_cache(maxsize=64)', '64->65'):
        CACHE,
    ('fluid/batch_time_fit.py', '@lru_cache(maxsize=64)', '64->63'):
        CACHE,
    ('fluid/sharegpt.py', '@lru_cache(maxsize=4)', '4->5'):
        CACHE,
    ('fluid/sharegpt.py', '@lru_cache(maxsize=4)', '4->3'):
        CACHE,
    ('fluid/symbolic.py', '@lru_cache(maxsize=8)', '8->9'):
        CACHE,
    ('fluid/symbolic.py', '@lru_cache(maxsize=8)', '8->7'):
        CACHE,
    ('fluid/traces.py', '@lru_cache(maxsize=16)', '16->17'):
        CACHE,
    ('fluid/traces.py', '@lru_cache(maxsize=16)', '16->15'):
        CACHE,
    ('runtime/schedulers/mc_sf.py', 'worst = -1 << 62', '62->63'):
        "the starting maximum only has to lie below every projected peak, and peaks are token counts ≥ 0",
    ('runtime/schedulers/mc_sf.py', 'worst = -1 << 62', '62->61'):
        "the starting maximum only has to lie below every projected peak, and peaks are token counts ≥ 0",
    ('runtime/schedulers/mc_sf.py', 'self._arrival_seq += 1', '1->2'):
        "a tie-breaker: any strictly increasing sequence orders the heap the same",
    ('runtime/schedulers/slai.py', 'self._seq += 1', '1->2'):
        "a heap tie-breaker after (LST, arrival): any strictly increasing sequence orders it the same",
    ('thresholds/report.py', 'total = policy.guarantees.memory_policy_tokens or 1.0', '1.0->2.0'):
        "the fallback divisor of a zero total, which cannot occur: every threshold and footprint is > 0",
    ('thresholds/report.py', 'total = policy.guarantees.memory_required_tokens or 1.0', '1.0->2.0'):
        "the fallback divisor of a zero total, which cannot occur: every threshold and footprint is > 0",
    ('runtime/schedulers/base.py', 'if w.num_new_tokens == 1 and cached >= r.prefill_target_tokens:  # a decode stage', '1->2'):
        "the inlined decode case is only a fast path: a decode it skips goes to `Request.advance`, whose decode "
        "case makes the same changes (cached + 1, one more stage and token time, completion at the last stage)",
    ('runtime/schedulers/base.py', 'if w.num_new_tokens == 1 and cached >= r.prefill_target_tokens:  # a decode stage', '>=->>'):
        "the inlined decode case is only a fast path: a decode right after its prefill (cached = target) goes to "
        "`Request.advance` instead, whose decode case makes the same changes",
    ('runtime/schedulers/base.py', 'if w.num_new_tokens == 1 and cached >= r.prefill_target_tokens:  # a decode stage', '1->0'):
        "the inlined decode case is only a fast path: every decode then goes to `Request.advance`, which makes the "
        "same changes; the inline path would take only work of 0 new tokens, which no policy schedules",
    ('runtime/schedulers/queues.py', 'stop = end if end - i <= budget else i + budget', '<=-><'):
        "at end − i = budget both branches give the same stop, end = i + budget",
    ('fluid/symbolic.py', 'd_kv, d_new = sp.symbols("d_kv d_new", nonnegative=True)', 'True->False'):
        "an assumption that only steers simplification: the balance equations are linear in the unknowns, so sympy returns the same solution (compared with the closed forms in tests/test_symbolic.py)",
    ('thresholds/nested.py', 'return brentq(theta_residual, lo, hi, args=(n_prev, n_next, p_prev), xtol=1e-300, rtol=8.9e-16, maxiter=500)', '500->499'):
        "an iteration cap that is never reached: Brent's method on this bracketed convex residual stops at rtol in far fewer steps",
    ('thresholds/nested.py', 'return brentq(theta_residual, lo, hi, args=(n_prev, n_next, p_prev), xtol=1e-300, rtol=8.9e-16, maxiter=500)', '500->501'):
        "an iteration cap that is never reached: Brent's method on this bracketed convex residual stops at rtol in far fewer steps",
    ('fluid/ode.py', 'if len(sol.t) and sol.t[-1] == hi:', '1->2'):
        "the shortcut only saves a second integration: a mutant that misses it integrates the bin again to the same end state (to the solver tolerance), and none makes it hold when the last sample is not at the bin end",
    ('fluid/ode.py', 'if len(sol.t) and sol.t[-1] == hi:', '1->0'):
        "the shortcut only saves a second integration: a mutant that misses it integrates the bin again to the same end state (to the solver tolerance), and none makes it hold when the last sample is not at the bin end",
    ('fluid/ode.py', 'if len(sol.t) and sol.t[-1] == hi:', '-->'):
        "the shortcut only saves a second integration: a mutant that misses it integrates the bin again to the same end state (to the solver tolerance), and none makes it hold when the last sample is not at the bin end",
    ('runtime/schedulers/threshold_base.py', 'return left if chunk is None or chunk >= left else chunk', '>=->>'):
        "at chunk = left both branches return the same number",
    ('thresholds/policy_parse.py', 'problem = segment_chain_problem(out + [Segment(first, last, n, 0.0, None)])', '0.0->1.0'):
        "a placeholder continuation probability: `segment_chain_problem` reads only stages and thresholds",
    ('runtime/schedulers/base.py', 'if total > held * kv.block_size:', '>->>='):
        "at equality the held blocks already cover the tokens: the extra call grows nothing (`KVBlockManager.grow` returns when no block is needed)",
    ('runtime/schedulers/base.py', 'if total > held * block_size:', '>->>='):
        "at equality the held blocks already cover the tokens: the extra call grows nothing (`KVBlockManager.grow` returns when no block is needed)",
    ('runtime/schedulers/base.py', 'if ctx + num_new_tokens > kv._held.get(request.request_id, 0) * kv.block_size:', '>->>='):
        "at equality the held blocks already cover the tokens: the extra call grows nothing (`KVBlockManager.grow` returns when no block is needed)",
    ('runtime/metrics.py', 'if len(times) > 1:', '>->>='):
        "with one token the decode tokens `times[1:]` are empty and add 0 either way",
    ('fluid/over_time.py', 'which = which.reshape(-1)', '1->2'):
        "numpy reads any negative size in reshape as the one unknown dimension (numpy 2.4, also under -W error): "
        "reshape(-2) of the inverse index of np.unique, shape (n,) or (n, 1) by numpy version, is the same (n,) array",
    ('fluid/equilibrium.py', 'return self.load_factor < 1 and self.memory_star_tokens <= self.kv_capacity_tokens', '<-><='):
        "at L = 1 the memory clause already fails: every FluidPoint/FluidArrays comes from `closed_form_arrays`, which sets M* = inf when L ≥ 1, and C is a finite token count",
    ('fluid/traces.py', 'idx = np.minimum((trace.arrival_s // bin_s).astype(np.int64), num_bins - 1)', '-->+'):
        "the clip never binds: the only TimestampTrace comes from `load_timestamp_trace`, with arrival_s = stamps − stamps[0] non-decreasing, so arrival_s // bin_s ≤ arrival_s[-1] // bin_s = num_bins − 1 (floor division is monotone)",
    ('thresholds/tune.py', 'slacks = [s for s in SLACKS if s < 1 - point.load_factor]', '<-><='):
        "equality needs 1 − L = s: for L ≥ 0.5 the subtraction is exact (Sterbenz) and 1 − 0.02, 1 − 0.05, 1 − 0.1 are not doubles, for L < 0.5 1 − L > 0.1; so only s = 0 at L = 1, where the extra candidate's solve raises (the load is not below ρ = 1) and the grid is empty either way: the same error; "
        "and at s = 1 − L exactly the solvers refuse the slack (L ≥ ρ = 1 − s), which the grid loop skips",
    ('thresholds/policy_parse.py', 'r.fail("capped." + (err.field or "adaptive"), str(err).split(": ", 1)[-1])', '-->'):
        "every InputError AdaptiveSettings raises names its field (`adaptive.<key>`), so its text is \"field '…': message\" and split(': ', 1) has exactly two parts: [1] is [-1]",
    ('thresholds/policy_parse.py', 'close = difflib.get_close_matches(key, known, n=1)', '1->2'):
        "only close[0] is read: get_close_matches returns the n largest (score, word) pairs in descending order, so the first is the same for n = 1 and n = 2 (and the list is empty for both or neither)",
    ('fluid/batch_time_fit.py', 'scale[scale == 0] = 1.0  # columns are scaled so tokens (1e5) and the constant (1) compare', '1.0->2.0'):
        "the scale of an all-zero column: that column divided by 1 or 2 is the same zero column, so lstsq gets the same matrix and returns the same solution, whose entry for the zero column is the minimum-norm 0 (exactly 0.0 in 3,000 random trials); 0 / 1 = 0 / 2 and the sign test sees the same signs",
    ('runtime/schedulers/mc_sf.py', 'if e >= last_step:', '>=->>'):
        "at a tie e = last_step the extra loop pass computes the peak the original computes as `own` (same remaining sum and count), and each further tie and the final `own` subtract c + e, that request's KV tokens at instant e (≥ 0: prefill + decoded tokens + block slack): the maximum is the same",
    ('runtime/schedulers/cohorts.py', 'if k < num and max_wait_s != math.inf:', '<-><='):
        "at k = num the overdue loop `range(num − 1, k − 1, −1)` is empty and `return k` follows either way; the extra due_times_s call only computes (and caches until the queues change) the values it returns when called later",
    ('runtime/schedulers/base.py', 'if total > held * kv.block_size and not kv.try_grow(request, num_new_tokens):', '>->>='):
        "at equality the held blocks already cover the tokens: `try_grow` finds need = blocks_for(total) − held = 0 and returns True without changing anything",
    ('runtime/schedulers/base.py', 'batch._counted += count', '+=->-='):
        "`_counted` only tells shape() whether every item went through the counting paths; a count that is wrong makes it recount the items, which gives the same BatchShape (the only direct change of items, RAD's filter, follows reserve_decodes calls only, so the mutated count is ≤ 0 and never equals a length): slower, same result",
    ('runtime/schedulers/queues.py', 'NO_BUDGET = 1 << 62  # stands for "no token budget" inside the running pass', '62->61'):
        "a sentinel that only has to exceed every token count of one pass (2^61 ≈ 2.3·10^18 tokens does as well as 2^62), and it never leaves the pass: the pass returns None for 'no budget'",
    ('runtime/schedulers/cohorts.py', 'if t < due[idx]:', '<-><='):
        "a running minimum: at t = due[idx] the assignment writes the value already there",
    # runtime/schedulers (base, waiting_order), runtime/metrics
    ('runtime/schedulers/base.py', 'batch._counted += 1', '+=->-='):
        "`_counted` only tells shape() whether every item went through the counting paths: counted down by "
        "try_reserve or reserve it falls below the number of items (the only direct change of items, RAD's filter, "
        "follows reserve_decodes calls in a batch with no try_reserve or reserve), so shape() recounts the items "
        "and gives the same BatchShape (shape() is read before complete_step changes a request): slower, same result",
    ('runtime/schedulers/waiting_order.py', 'self._back = 0  # next position at the back (counts up)', '0->1'):
        "positions only order the heap's entries of equal (tier, length): back positions count up from `_back + 1` "
        "and front positions down from `_front − 1`, so starting the back at 1, 0 or −1 (or the front at 1, 0 or −1) "
        "keeps every front position below every back one and each side in its order: the same pops",
    ('runtime/schedulers/waiting_order.py', 'self._back = 0  # next position at the back (counts up)', '0->-1'):
        "positions only order entries of equal (tier, length): see the `0->1` entry of this line",
    ('runtime/schedulers/waiting_order.py', 'self._front = 0  # next position at the front (counts down)', '0->1'):
        "positions only order entries of equal (tier, length): see the `_back` entries",
    ('runtime/schedulers/waiting_order.py', 'self._front = 0  # next position at the front (counts down)', '0->-1'):
        "positions only order entries of equal (tier, length): see the `_back` entries",
    ('runtime/schedulers/waiting_order.py', 'self._back += 1', '1->2'):
        "positions only order entries of equal (tier, length): counting the back up by 2 keeps it strictly "
        "increasing and above every front position, so the same pops",
    ('runtime/schedulers/waiting_order.py', 'self._front -= 1', '1->2'):
        "positions only order entries of equal (tier, length): counting the front down by 2 keeps it strictly "
        "decreasing and below every back position, so the same pops",
    ('runtime/schedulers/waiting_order.py', 'tier = request.tier if self.tiered else 0', '0->1'):
        "the tier of an order that does not sort by it is one constant for every entry: any constant "
        "leaves the heap ordered by the next key",
    ('runtime/schedulers/waiting_order.py', 'tier = request.tier if self.tiered else 0', '0->-1'):
        "the tier of an order that does not sort by it is one constant for every entry: any constant "
        "leaves the heap ordered by the next key",
    ('runtime/schedulers/waiting_order.py', 'length = request.prefill_target_tokens if self.by_length else 0', '0->1'):
        "the length of an order that does not sort by it is one constant for every entry: any constant "
        "leaves the heap ordered by the next key",
    ('runtime/schedulers/waiting_order.py', 'length = request.prefill_target_tokens if self.by_length else 0', '0->-1'):
        "the length of an order that does not sort by it is one constant for every entry: any constant "
        "leaves the heap ordered by the next key",
    ('runtime/schedulers/cohorts.py', 'if k < num and max_wait_s != math.inf:', 'and->or'):
        "with k = num the overdue loop `range(num − 1, k − 1, −1)` is empty and `return k` follows; with no drain "
        "timer (max_wait_s = inf) every due time is inf, never ≤ now: either way `return k`, the extra due_times_s "
        "call only computing (and caching until the queues change) the values it returns when called later",
    ('runtime/metrics.py', 'if len(times) > 1:', '1->0'):
        "a request with one token time has no decode token: `times[1:]` is empty and adds a count of 0, "
        "as skipping it does (an empty token list is skipped either way)",
    ('runtime/schedulers/mc_sf.py', 'self._step = 0  # number of the next iteration: the projection\'s time axis', '0->1'):
        "the projection's frame is only relative: starting at 1 adds 1 to every last step E and takes 1 from every "
        "offset c = p − T_a, so each projected memory Σ c + e·N (and the candidate's offset + e) is unchanged, and "
        "`_forget_finished` drops E < step in the same frame",
    ('runtime/schedulers/mc_sf.py', 'self._step = 0  # number of the next iteration: the projection\'s time axis', '0->-1'):
        "the projection's frame is only relative: see the `0->1` entry of this line",
    ('runtime/schedulers/slai.py', 'self._seq = 0  # heap tie-breaker after (LST, arrival)', '0->1'):
        "a tie-breaker that only has to increase with every push: starting at 1 (or −1) keeps that",
    ('runtime/schedulers/slai.py', 'self._seq = 0  # heap tie-breaker after (LST, arrival)', '0->-1'):
        "a tie-breaker that only has to increase with every push: starting at −1 keeps that",
    # fluid: ode, over_time, lp, workload(_io), equilibrium, traces, trace_binning, fleet, memory, sharegpt, batch_time_fit/profile
    ('fluid/ode.py', 'edges = sorted({0.0, float(duration_s), *[b for b in breaks if 0.0 < b < duration_s]})', '<-><='):
        "a break at exactly 0 or at the horizon joins a set that already holds 0.0 and float(duration_s), so the "
        "integration edges are the same (either `<` of the chained comparison)",
    ('fluid/over_time.py', 'max(1, int(round(output[which == k].mean()))), 1.0) for k in used)', '1->0'):
        "request_types refuses any output below 1 token just above, so a bin's mean output is ≥ 1 and rounds to ≥ 1: "
        "max(0, ·) returns the same",
    ('fluid/ode.py', 'if excess_rate > 0:', '>->>='):
        "at excess_rate = 0 the branch evicts nothing: every level's share is clip((0 − before)/cap, 0, 1) = 0 "
        "(before ≥ 0), so evict stays zero as without the branch",
    ('fluid/traces.py', 'idx = np.minimum((trace.arrival_s // bin_s).astype(np.int64), num_bins - 1)', '1->0'):
        "as for `-`→`+` on this line: the clip never binds for a trace from load_timestamp_trace (arrival_s[0] = 0), "
        "so raising it to num_bins changes nothing",
    # thresholds/ (WAIT, Nested WAIT, capped rule, tuning, reports) and runtime/schedulers/adaptive.py
    ('thresholds/wait.py', 'if closed_form(workload.scaled(mid)).load_factor < rho and _least_feasible(workload.scaled(mid), rho, cap):', '<-><='):
        "the load clause never fails: `_memory_diagnosis` runs only from `solve_wait`, after it refused L ≥ ρ at "
        "scale 1, and the bisection's mid stays ≤ 1 − 2^-40 (hi ≤ 1, mid < hi); L(mid) is a sum of non-negative "
        "products of the rates times mid, each rounded monotonically, so L(mid) ≤ L(1) < ρ: `<` and `<=` agree",
    ('thresholds/nested.py', 'hi = max(2 * lo, 1.0)', '2->1'):
        "`solve_theta` reaches this line only with lo > 0 and f(lo) < 0 (it returns 2·lo when f(lo) ≥ 0): for "
        "lo ≤ 1 both give hi = 1.0; for lo > 1 the mutant starts at hi = lo, where f < 0, so the doubling loop "
        "makes it 2·lo before anything else: the same bracket, the same root",
    ('thresholds/adaptive.py', 'solved = _chunk(max(prefill_tokens_per_step, 0.0), 2**62)  # no longest-prompt cut: a chunk past every prompt is the same', '0.0->1.0'):
        "`_chunk` rounds up to whole 16-token blocks, at least one: every value in [0, 16] (so 0 and 1 alike) "
        "gives one block, 16 tokens, and a value above 1 passes either clip unchanged",
    # fluid/batch_time_stepwise.py
    ('fluid/batch_time_stepwise.py', 'scale[unused] = 1.0', '1.0->2.0'):
        "the scale of an all-zero column: divided by 1 or 2 it is the same zero column, and its coefficient "
        "is then set to 0 (`_no_evidence_is_zero`), so the solution is the same",
    ('fluid/fleet.py', 'mats.objective = np.concatenate([np.tile(wl / (scale or 1.0), g_count), np.zeros(n - n_y)])', '1.0->2.0'):
        "the stand-in divisor of an all-zero objective: wl is then all zeros and 0 / 1 = 0 / 2 = 0 exactly "
        "(the reported scale stays 0, which tests/test_lp.py checks through the duals)",
    ('thresholds/wait.py', 'for _ in range(40):  # max rate scale whose thresholds fit in C (monotone up to rounding)', '40->41'):
        "the bisection's result is only printed, to 4 significant digits: 40 and 41 halvings of [0, 1] agree "
        "to 2^-40 ≈ 9e-13, so the message differs only for a largest scale within 1e-12 of a rounding edge",
    ('thresholds/wait.py', 'for _ in range(40):  # max rate scale whose thresholds fit in C (monotone up to rounding)', '40->39'):
        "the bisection's result is only printed, to 4 significant digits: 39 and 40 halvings of [0, 1] agree "
        "to 2^-39 ≈ 2e-12, so the message differs only for a largest scale within 2e-12 of a rounding edge",
    ('thresholds/tune.py', 'slacks = [s for s in SLACKS if s < 1 - point.load_factor]', '-->+'):
        "the filter only saves solves: solve_wait_capped and solve_nested_capped_auto refuse a slack with "
        "L ≥ 1 − slack (UnstableWorkloadError), and the grid loop skips a slack whose solve fails, so the "
        "trials are the same (tests/test_thresholds_tune.py checks which slacks are tried)",
    ('thresholds/nested.py', 'prefill = max(1, round(sum(t.rate_per_s * t.prefill for t in types) / total))', '1->0'):
        "every type's prefill is ≥ 1 (RequestType refuses less), so the rate-weighted mean prefill is ≥ 1 and rounds "
        "to ≥ 1: max(0, ·) returns the same",
    ('thresholds/tune.py', 'decode_steps = sum(r.decode_steps_done for r in reqs) or 1', '1->2'):
        "the fallback divisor of a run without decode steps, which cannot occur: simulate runs every request to its "
        "end and every type has l' ≥ 1 (RequestType), so the sum is ≥ 1",
    ('thresholds/nested.py', 'hi = max(2 * lo, 1.0)', '*->/'):
        "only the root-finder's first upper bracket: a start at or below the root (2/lo < lo for lo > √2) is doubled "
        "until f > 0, f < 0 on (0, root) and > 0 beyond it, so Brent's method brackets the same single root in "
        "[lo, hi]; the two results differ (by up to 2.2e-8 relative) only within " + ROOT_OF_F,
    ('thresholds/nested.py', 'hi = max(2 * lo, 1.0)', '2->3'):
        "only the root-finder's first upper bracket: [lo, max(3·lo, 1)] holds the single root of f beyond lo as "
        "[lo, max(2·lo, 1)] does after the doubling loop, and the results differ (by up to 2.6e-12 relative) only "
        "within " + ROOT_OF_F,
    ('runtime/schedulers/base.py', 'if w.num_new_tokens == 1 and cached >= r.prefill_target_tokens:  # a decode stage', '==->!='):
        "the inlined decode case is only a fast path: with `!=` every decode goes to `Request.advance`, which makes the "
        "same changes, and a work item of several tokens never has cached ≥ its prefill target (a prefill chunk ends at "
        "the target at most), so the inline path takes nothing",
    ('thresholds/nested.py', 'hi *= 2', '2->3'):
        "only how fast the root-finder's upper bracket grows: any factor > 1 stops at the first hi with f > 0, and "
        "Brent's method on [lo, hi] returns the one root there to its rtol of 8.9e-16",
    ('thresholds/adaptive.py', 'solved = _chunk(max(prefill_tokens_per_step, 0.0), 2**62)  # no longest-prompt cut: a chunk past every prompt is the same',
     '62->61'):
        "a stand-in longest prompt that only has to exceed every chunk: a chunk of 2**61 tokens would take 2.3e18 prefill "
        "tokens a step, beyond any rate × prompt a workload can hold",
    ('fluid/fleet.py', 'mats = LPMatrices(g_count, m, options.capacity, np.zeros(0), 1.0)', '1.0->2.0'):
        "a placeholder: both objective branches below (capacity: θ_ref; throughput: Σ w λ) overwrite objective_scale "
        "before the matrices are returned",
    ('thresholds/capped_solve.py', 'if all(dt <= rho * k / t.rate_per_s * (1 + 1e-12) for k, t in zip(n, types)):  # every λ_j > 0 (RequestType)',
     '<=-><'):
        "`<` differs from `≤` only when ΔT equals ρ n_j / λ_j · (1 + 1e-12) to the last bit; the equality case the "
        "slack is there for (caps that serve the rate exactly, ΔT = ρ n_j / λ_j) passes either way",
    ('fluid/batch_time_fit.py', 'exact = bool(np.all(np.abs(pred - y) <= 1e-12 * y))', '<=-><'):
        "times are > 0 (fit_linear refuses others), so an exact fit (residual 0) passes `<` too: the two differ only at a "
        "residual of exactly 1e-12 × its time, to the last bit",
    ('runtime/schedulers/threshold_base.py', 'if group.num_segments == 1 and stages and max(map(len, stages.values())) <= n:', '<=-><'):
        "the one-pass branch is a fast path: with a stage of exactly n the stage-by-stage pass below also moves every "
        "stage whole (`len(q) <= n`), in the same dict order, reserving the same decodes and recording the same moves",
    ('fluid/fleet.py', 'rate_unit: np.ndarray = field(default_factory=lambda: np.zeros(0))  # ỹ_{g,j} = y_{g,j} / rate_unit[j]', '0->1'):
        "a placeholder: build_matrices sets rate_unit to the (scaled) rates before any block is built or read",
    ('thresholds/adaptive.py', 'if stages_per_s * per_resident >= rho:', '>=->>'):
        "the load never reaches ρ here: _largest_fitting_scale tries scales up to min(1, max_capacity_fraction·ρ/L) "
        "with max_capacity_fraction < 1, so the load tried is at most max_capacity_fraction·ρ < ρ",
    ('thresholds/report.py', 'if m.required_tokens < with_margin * (1 - 1e-12):', '<-><='):
        "`≤` differs from `<` only when the requirement equals expected·(1 + margin)·(1 − 1e-12) to the last bit; "
        "an uncut margin (requirement = expected·(1 + margin)) reads as uncut either way",
    ('fluid/symbolic.py', 'theta_sols = sp.solve(sp.Eq(M_star.subs(scaled, simultaneous=True), C), theta)', 'True->False'):
        "each λ_j maps to θ·λ_j, which holds no other key of the substitution: replacing them one at a time gives the "
        "same expression as replacing them together",
    ('runtime/schedulers/base.py', 'if total > held * kv.block_size and not kv.try_grow(request, num_new_tokens):', '*->/'):
        "a fast path: when the held blocks already hold the tokens, `try_grow` needs 0 more blocks and returns True, "
        "so calling it (as held / block_size makes it do more often) changes nothing",
    ('thresholds/policy_parse.py', 'if not math.isclose(report.required_tokens, chosen, rel_tol=1e-9, abs_tol=1e-9):', '1e-9->0.0'):
        "abs_tol only matters within 1e-9 of zero; a required memory is at least one request's tokens, where rel_tol "
        "decides alone",
    ('runtime/schedulers/sarathi.py', 'if i < end:  # the newest arrival not yet walked', '<-><='):
        "they differ only at i = end, where r is order[i - 1] = order[end - 1]: `i <= end` takes order[end - 1] "
        "as the victim, which is r, so both evict r and break; `end` is read after that only by `while i < end`, "
        "false either way (i = end, or end = i - 1)",
    ('fluid/batch_time_fit.py', 'r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if exact else 0.0)', '0.0->1.0'):
        "the fallback of equal times whose fit does not reproduce them, which cannot occur: ss_tot is 0 only when "
        "every time is equal (unequal times have a positive sum of squares relative to their mean: it cannot "
        "underflow), and the non-negative least squares reproduces equal times through its constant column "
        "(d0 = the time, the token coefficients 0; the constant's coefficient is never the one dropped), so `exact` "
        "holds whenever the branch is taken: over 100,000 random designs of 2-39 rows (kv up to 1e9 tokens, "
        "times 1e-6-1e4 s) the worst |pred − y| / y was 2.4e-15, against the 1e-12 tolerance",
    ('runtime/schedulers/rad.py', 'if len(kept) != len(batch.items):', '!=->=='):
        "the preempted victim is never in the decode batch: `_newest` is the prompt being prefilled (no work in a "
        "decode step) or the last resident, and `order` lists the residents in the dict's order, so it is "
        "`order[-1]`, at or after the index `reserve_decodes` stopped at, with nothing reserved yet; `kept` always "
        "equals the items (42,643 preemptions over 2,901 random runs, none with a difference), so the mutant only assigns the "
        "same list back and shape() keeps the same count",
    ('fluid/batch_time_stepwise.py', 'probe = StepwiseBatchTime((0.0,) * len(TERMS), tuple(decode_buckets), tuple(token_buckets), max_prefills, max_decodes)', '0.0->1.0'):
        "a placeholder: the probe only carries the buckets and limits into `_design`, whose `features` never read "
        "the coefficients (fit_coefficients and fit_stepwise build it the same way; the fitted model is built anew "
        "from the solved coefficients)",
}

EQUIVALENTS_AT: dict[tuple[str, str, str, int], str] = {
    ('thresholds/nested.py', 'fluid = closed_form(workload.scaled(1 / rho)) if rho < 1 else closed_form(workload)',
     '1->2', 55):
        "`rho < 2` always takes the first branch, which differs only at ρ = 1 (slack ≥ 0 keeps ρ ≤ 1): there "
        "workload.scaled(1 / 1) multiplies every rate by 1.0 exactly, and closed_form reads only rates, lengths, "
        "C and the batch time, so the fluid point is the same (the `1 / rho` at column 36 is not equivalent)",
    ('thresholds/segments.py', 'edges = [round(k * longest / num_segments) for k in range(1, num_segments + 1)]',
     '1->2', 76):
        "`range(1, m + 2)` adds one edge, round((m+1)·longest/m) > longest; the largest length at or below it "
        "is `longest`, already chosen by edge m = longest, and `chosen` is a set (the `range(1` at column 57 "
        "is not equivalent: it drops the first edge, and tests/test_thresholds_nested.py sees that)",
    ('runtime/schedulers/cohorts.py', 'for idx in range(num - 1, k - 1, -1):', '1->2', 30):
        "the loop's stop `k − 2` adds one pass, idx = k − 1: for k ≥ 1 it can only `return k`, what the fall-through "
        "returns; for k = 0 it reads due[-1] = due[num − 1], which the first pass already found not overdue "
        "(else it returned num). The `num − 1` at column 23 is not equivalent (it skips the last segment)",
    # runtime/schedulers/capped.py
    ('runtime/schedulers/capped.py', 'return float(np.max(tokens + alive * b)) <= capacity or _peak_blocks_tokens(e, k, b) <= capacity', '<=-><', 41):
        "the first test is a shortcut: each line holds B⌈(k + t)/B⌉ < k + t + B at every departure point, so the "
        "bound `tokens + alive·B` ≤ C (or < C) implies the exact block peak ≤ C, and `bound or exact` is the exact "
        "test either way. The `<=` at column 85 (the exact test) is not equivalent",
    # runtime/schedulers/base.py: Batch's running totals
    ('runtime/schedulers/base.py', '_counted: int = field(default=0, init=False, repr=False)', 'False->True', 38):
        "`init=True` only adds an optional `_counted=0` parameter to Batch(): every Batch is built as `Batch()` and "
        "none is copied with dataclasses.replace, so it starts at 0 either way (its `repr=False` column is not "
        "equivalent: tests/test_sim_core.py reads a batch's repr)",
    ('runtime/schedulers/base.py', '_new_tokens: int = field(default=0, init=False, repr=False)', 'False->True', 41):
        "`init=True` only adds an optional `_new_tokens=0` parameter to Batch(): every Batch is built as `Batch()` and "
        "none is copied with dataclasses.replace, so it starts at 0 either way (its `repr=False` column is not "
        "equivalent: tests/test_sim_core.py reads a batch's repr)",
    ('runtime/schedulers/base.py', '_kv_tokens: int = field(default=0, init=False, repr=False)', 'False->True', 40):
        "`init=True` only adds an optional `_kv_tokens=0` parameter to Batch(): every Batch is built as `Batch()` and "
        "none is copied with dataclasses.replace, so it starts at 0 either way (its `repr=False` column is not "
        "equivalent: tests/test_sim_core.py reads a batch's repr)",
    ('runtime/schedulers/base.py', '_num_prefills: int = field(default=0, init=False, repr=False)', 'False->True', 43):
        "`init=True` only adds an optional `_num_prefills=0` parameter to Batch(): every Batch is built as `Batch()` and "
        "none is copied with dataclasses.replace, so it starts at 0 either way (its `repr=False` column is not "
        "equivalent: tests/test_sim_core.py reads a batch's repr)",
    ('runtime/schedulers/base.py', '_prefill_pairs: int = field(default=0, init=False, repr=False)', 'False->True', 44):
        "`init=True` only adds an optional `_prefill_pairs=0` parameter to Batch(): every Batch is built as `Batch()` and "
        "none is copied with dataclasses.replace, so it starts at 0 either way (its `repr=False` column is not "
        "equivalent: tests/test_sim_core.py reads a batch's repr)",
    ('fluid/ode.py', 'share = np.clip((excess_rate - before) / np.where(level_cap > 0, level_cap, 1.0), 0.0, 1.0)',
     '1.0->2.0', 76):
        "the stand-in divisor of an empty level (level_cap = Σ pop·tokens/ΔT = 0 with tokens ≥ 1 and pop ≥ 0 "
        "means every compartment of that level is empty): its share multiplies pop = 0, so nothing is evicted "
        "there whatever the divisor (the clip's upper 1.0 at column 87 is not equivalent)",
    ('fluid/over_time.py', 'types = tuple(RequestType(f"d{edges[k]}-{edges[k + 1] - 1}", max(1, int(round(prompt[which == k].mean()))),',
     '1->0', 65):
        "request_types refuses any prompt below 1 token just above, so a bin's mean prompt is ≥ 1 and rounds to ≥ 1: "
        "max(0, ·) returns the same",
    ('fluid/workload_io.py', 'elif path.suffix.lower() in (".yaml", ".yml", ".json") or os.sep in str(spec) or "/" in str(spec):',
     'or->and', 78):
        "os.sep is '/' on the POSIX systems this runs on, so `os.sep in spec and '/' in spec` is the test `'/' in spec` "
        "already is (the `or` at column 55 is not equivalent: tests/test_workload_io.py sees a suffix-only path)",
    ('runtime/metrics.py', 'parts = [np.asarray(r.token_times_s[1:], dtype=np.float64) for r in requests if len(r.token_times_s) > 1]',
     '1->0', 103):
        "`> 0` also keeps a request with one token, whose decode stamps `token_times_s[1:]` are an empty float64 array: "
        "concatenated with the others it adds nothing, and a list of only such arrays concatenates to the empty float64 "
        "array np.empty(0) is, so the counts are the same (the `[1:]` at column 36 is not equivalent)",
    ('runtime/schedulers/threshold_base.py', 'if now < t < best:', '<-><=', 11):
        "`t <= best` replaces the minimum by an equal value: the earliest due time is the same (the `now < t` "
        "at column 7 is not equivalent: a due time at the clock would hide a later one)",
}


def reason_for(path: str, source_line: str, original: str, replacement: str, column: int | None = None) -> str | None:
    at = EQUIVALENTS_AT.get((path, source_line, f"{original}->{replacement}", column)) if column is not None else None
    return at or EQUIVALENTS.get((path, source_line, f"{original}->{replacement}"))
