"""Surviving mutants of `benchmarks/mutation.py` that are equivalent: no input can tell them apart.

Each entry: (file, the stripped source line, "original->replacement") and why. A mutant matching an
entry is left out of the score and listed with its reason; an entry that no longer matches any
mutant is harmless (the line changed). Add an entry only with the reason a test cannot fail.
"""

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
    ('fluid/equilibrium.py', 'return self.load_factor < 1 and self.memory_star_tokens <= self.kv_capacity_tokens', '<-><='):
        "at L = 1 the memory clause already fails: every FluidPoint/FluidArrays comes from `closed_form_arrays`, which sets M* = inf when L ≥ 1, and C is a finite token count",
    ('fluid/traces.py', 'idx = np.minimum((trace.arrival_s // bin_s).astype(np.int64), num_bins - 1)', '-->+'):
        "the clip never binds: the only TimestampTrace comes from `load_timestamp_trace`, with arrival_s = stamps − stamps[0] non-decreasing, so arrival_s // bin_s ≤ arrival_s[-1] // bin_s = num_bins − 1 (floor division is monotone)",
}


def reason_for(path: str, source_line: str, original: str, replacement: str) -> str | None:
    return EQUIVALENTS.get((path, source_line, f"{original}->{replacement}"))
