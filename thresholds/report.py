"""Readable tables of a policy (for `fluidsched solve`, `show` and `check`).

Stage load is the share of a stage's service the traffic uses at the policy's iteration time:
λ_j·ΔT(n)/n_j for a WAIT class, Λ_k·ΔT(n)/n_k for a Nested segment (Λ_k = the rate entering
segment k). Below 1 the stage keeps up; the fluid point has it at exactly 1.
"""

from __future__ import annotations

from fluid.tables import format_table
from thresholds.conditions import Condition, footprint_token_iterations, segment_kv_tokens
from thresholds.policy import NestedWaitPolicy, Policy, WaitPolicy


_table = format_table  # one printer for every command (fluid/tables.py)


def _iteration_time_s(policy: Policy) -> float:
    return float(policy.options.get("iteration_time_s", float("nan")))


def conditions_text(conditions: tuple[Condition, ...] | list[Condition]) -> str:
    rows = [["ok" if c.holds else "BROKEN", c.name, f"{c.lhs:.6g}", f"{c.rhs:.6g}"] for c in conditions]
    return _table(["verdict", "condition", "lhs", "rhs"], rows)


def policy_text(policy: Policy) -> str:
    f, g = policy.fluid, policy.guarantees
    dt = _iteration_time_s(policy)
    head = [
        f"policy {policy.kind} ({policy.service_rule} service), mode {policy.options.get('mode')}, "
        f"workload '{policy.workload.name}' (sha256 {policy.workload.content_sha256[:12]}…)",
        f"fluid: M* = {_num(f.memory_star_tokens)} tokens, ΔT* = {_num(f.iteration_time_star_s, 's')}, "
        f"throughput* = {f.throughput_star_tokens_per_s:.6g} tokens/s, load factor L = {f.load_factor:.4g}, "
        f"capacity scale θ* = {f.capacity_scale:.4g}",
        f"policy: ΔT(n) = {dt:.6g} s, drain after {policy.drain.max_wait_s:.6g} s of waiting",
    ]
    body = _wait_rows(policy, dt) if isinstance(policy, WaitPolicy) else _nested_rows(policy, dt)
    cap = policy.kv_capacity_tokens
    totals = (f"memory: M^π = {g.memory_policy_tokens:.6g} + buffer {g.buffer_tokens:.6g} = "
              f"{g.memory_required_tokens:.6g} tokens of C = {cap} ({g.memory_required_tokens / cap:.1%})")
    if g.delta is not None:
        totals += f"; δ = {g.delta:g}, horizon {g.horizon_s:g} s"
    capped = getattr(policy, "capped", None)
    if capped is not None:
        m = capped.memory
        chosen = m.bound
        if m.bound == "expected":
            chosen = f"expected × (1 + {m.margin:.3g})"
            with_margin = m.expected_tokens * (1 + m.margin)
            if m.required_tokens < with_margin * (1 - 1e-12):
                # the worst case, a guarantee, is below the margin: the margin is cut to it (docs/capped-rule.md)
                chosen += f" = {with_margin:,.0f}, cut to the worst case"
        totals = (f"memory (capped rule, docs/capped-rule.md): expected {m.expected_tokens:,.0f} tokens (an expectation), "
                  f"worst case {m.worst_case_tokens:,.0f} (a guarantee), theorem M^π + buffer "
                  f"{'n/a' if m.theorem_tokens is None else f'{m.theorem_tokens:,.0f}'}; must fit C = {cap}: {chosen} = "
                  f"{m.required_tokens:,.0f} ({m.required_tokens / cap:.1%})\n"
                  f"caps: {_caps_text(policy)}, prefill chunk "
                  f"{'whole prompts' if capped.prefill_chunk_tokens is None else f'{capped.prefill_chunk_tokens} tokens'}")
    curve = policy.options.get("segments_curve")
    extra = []
    if curve:
        extra.append("memory requirement by number of segments L (--segments auto):")
        extra.append(_table(["L", "effective", "memory_tokens", "holds"], [
            [str(e["segments"]), str(e["effective_segments"]), _num(e["memory_required_tokens"]), "yes" if e["conditions_hold"] else "no"]
            for e in curve]))
    return "\n".join([*head, "", body, "", totals, *extra, "", conditions_text(g.conditions)])


def _caps_text(policy: Policy) -> str:
    from thresholds.capped import nested_resident_cap, wait_class_caps

    if isinstance(policy, WaitPolicy):
        caps = wait_class_caps([(c.decode, c.threshold) for c in policy.classes])
        return "per class " + ", ".join(f"{c.name} {k}" for c, k in zip(policy.classes, caps)) + f" (resident {sum(caps)})"
    return f"resident {nested_resident_cap([(s.first_stage, s.last_stage, s.threshold) for s in policy.segments])}"


def _num(x, unit: str = "") -> str:
    return "unbounded" if x is None else f"{x:.6g}{' ' + unit if unit else ''}"


def _wait_rows(policy: WaitPolicy, dt: float) -> str:
    total = policy.guarantees.memory_policy_tokens or 1.0
    rows = []
    for c in policy.classes:
        mem = c.threshold * footprint_token_iterations(c.prefill, c.decode)
        rows.append([c.name, str(c.prefill), str(c.decode), f"{c.rate_per_s:.6g}", str(c.threshold),
                     f"{c.rate_per_s * dt / c.threshold:.3f}", f"{mem:.6g}", f"{mem / total:.1%}"])
    return _table(["class", "prefill", "decode", "rate_per_s", "threshold", "stage_load", "memory_tokens", "share"], rows)


def _nested_rows(policy: NestedWaitPolicy, dt: float) -> str:
    rates = dict(policy.workload.rates_per_s)
    if policy.instances is None:
        groups = [(policy.representative_prefill_tokens, sum(rates.values()), policy.segments)]
    else:
        groups = [(i.prefill_tokens, sum(rates.get(n, 0.0) for n in i.type_names), i.segments) for i in policy.instances]
    total = policy.guarantees.memory_required_tokens or 1.0
    rows = []
    for prefill, rate, segments in groups:
        entering = rate
        for k, s in enumerate(segments, start=1):
            mem = s.threshold * segment_kv_tokens(prefill, s.first_stage, s.last_stage)
            rows.append([str(prefill), str(k), f"{s.first_stage}..{s.last_stage}", str(s.threshold),
                         f"{s.continue_prob:.4f}", "-" if s.theta is None else f"{s.theta:.5g}",
                         f"{entering * dt / s.threshold:.3f}", f"{mem:.6g}", f"{mem / total:.1%}"])
            entering *= s.continue_prob
    return _table(["prefill", "segment", "stages", "threshold", "continue_p", "theta", "stage_load",
                   "memory_tokens", "share"], rows)
