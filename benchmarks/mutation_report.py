"""The Markdown page of `benchmarks/mutation.py`: score per module, survivors, equivalents."""

from __future__ import annotations

from collections import defaultdict

from mutation_equivalents import reason_for

KILLED = ("killed", "killed (timeout)", "killed (crash)")


def classify(results: list[dict]) -> None:
    """Mark the survivors that are listed equivalents (in place)."""
    for r in results:
        if r["status"] in ("survived", "not covered"):
            why = reason_for(r["path"], r["source_line"], r["original"], r["replacement"], r.get("column"))
            if why:
                r["status"], r["equivalent_because"] = "equivalent", why


def _score(rows: list[dict]) -> tuple[int, int, int, float | None]:
    killed = sum(r["status"] in KILLED for r in rows)
    equivalent = sum(r["status"] == "equivalent" for r in rows)
    scored = len(rows) - equivalent
    return killed, equivalent, scored, (killed / scored if scored else None)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _mutant(r: dict) -> str:
    return f"`{r['path']}:{r['line']}` ({r['function']}) `{r['original']}` → `{r['replacement'] or '∅'}`: `{r['source_line']}`"


def render(doc: dict) -> str:
    results = doc["results"]
    classify(results)
    by_module: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by_module[r["path"]].append(r)
    killed, equivalent, scored, score = _score(results)
    beyond = [r for r in results if r.get("killed_beyond_cap")]
    short = [r for r in results if r["status"] in ("survived", "not covered") and r.get("tests_not_run")]
    m = doc["machine"]
    lines = [
        "# Mutation score",
        "",
        "How many small planted bugs the tests catch, over `fluid/`, `thresholds/`, `runtime/schedulers/`,",
        "the simulator (`runtime/sim.py`), KV blocks (`runtime/kv_blocks.py`) and metrics (`runtime/metrics.py`).",
        "Mutants, sampling and the test selection are described in `benchmarks/mutation.py` and",
        "`benchmarks/mutation_ops.py`; equivalent mutants, with why, in `benchmarks/mutation_equivalents.py`.",
        "",
        f"Command: `{doc['command']}` (seed {doc['seed']}; {len(results)} mutants drawn of "
        f"{sum(doc['mutants_total'].values())}, stratified by module). Machine: {m['platform']}, {m['cpus']} CPUs "
        f"(shared; load average {m['load_average']}), Python {m['python']}. Wall time {doc['wall_s'] / 60:.1f} min; "
        f"baseline {doc['baseline_tests']} tests.",
        "",
        *([f"Two passes: the sample was run with `{doc['first_pass_command']}` ({doc['first_pass_wall_s'] / 60:.1f} min); "
           f"its survivors were then run again on the current tree, after tests were added, with `{doc['command']}` "
           f"({doc['recheck_wall_s'] / 60:.1f} min). Mutants the first pass killed stay killed (tests were only added).", ""]
          if doc.get("first_pass_command") else []),
        *([("Earlier rechecks of the survivors, replaced by the one above: "
            + "; ".join(f"`{r['command']}` ({r['wall_s'] / 60:.1f} min)" for r in doc["rechecks"]) + "."), ""]
          if doc.get("rechecks") else []),
        f"Each mutant runs the tests that call its function, at most {doc.get('max_tests') or 'all'} of them (those of the "
        "test files that import its module first, then the fastest), stopping at the first failure; "
        + (f"a mutant surviving that capped selection then runs up to {doc['confirm']} more of those tests "
           f"(confirmation pass: {len(beyond)} of the kills come from it, listed below; "
           + (f"{len(short)} survivor(s) still had tests left out after it, marked below, so the score stays a lower bound)."
              if short else "no survivor had tests left out after it).")
           if doc.get("confirm") else
           "a survivor might still be killed by a test beyond the cap, so the score is a lower bound."),
        "",
        "## Score",
        "",
        *(["**Partial run** (interrupted): the mutants below are those that ran.", ""] if doc.get("partial") else []),
        f"**{_pct(score)}**: {killed} killed of {scored} mutants ({equivalent} equivalent mutants excluded). "
        "Timeouts count as killed.",
        "",
    ]
    if doc.get("kills_not_counted"):
        lines += [f"Not counted as kills: {doc['kills_not_counted']}.", ""]
    areas = [("fluid/", "fluid/"), ("thresholds/", "thresholds/"), ("runtime/schedulers/", "runtime/schedulers/"),
             ("simulator (sim, executor)", ("runtime/sim.py", "runtime/executor.py")), ("KV blocks", "runtime/kv_blocks.py"),
             ("metrics", "runtime/metrics.py")]
    lines += ["| area | drawn | killed | equivalent | score |", "|---|---:|---:|---:|---:|"]
    for label, prefix in areas:
        rows = [r for r in results if r["path"].startswith(prefix)]
        k, e, _, sc = _score(rows)
        lines.append(f"| {label} | {len(rows)} | {k} | {e} | {_pct(sc)} |")
    lines.append("")
    lines += ["Tests failing on the unmutated tree (left out of every run): "
              + (", ".join(f"`{t}`" for t in doc["baseline_failing"]) or "none") + ".", ""]
    lines += ["| module | mutants in module | drawn | killed | equivalent | survived | not covered | score |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for path in sorted(doc["mutants_total"]):
        rows = by_module.get(path, [])
        k, e, s, sc = _score(rows)
        survived = sum(r["status"] == "survived" for r in rows)
        uncovered = sum(r["status"] == "not covered" for r in rows)
        lines.append(f"| `{path}` | {doc['mutants_total'][path]} | {len(rows)} | {k} | {e} | {survived} | {uncovered} | {_pct(sc)} |")
    groups = [("Surviving mutants", "survived"), ("Mutants no test reaches", "not covered")]
    if any(r["status"] == "line gone" for r in results):
        groups.append(("Survivors whose line changed before the recheck (counted as surviving)", "line gone"))
    for title, status in groups:
        rows = [r for r in results if r["status"] == status]
        lines += ["", f"## {title} ({len(rows)})", ""]
        lines += [f"- {_mutant(r)}" + (f" ({r['tests_not_run']} of its tests not run)" if r.get("tests_not_run") else "")
                  for r in rows] or ["None."]
    rows = [r for r in results if r["status"] == "equivalent"]
    lines += ["", f"## Equivalent mutants ({len(rows)})", ""]
    lines += [f"- {_mutant(r)} — {r['equivalent_because']}" for r in rows] or ["None."]
    if doc.get("notes"):  # hand-written, about this run only (a rerun drops them)
        lines += ["", "## Notes", ""] + [f"- {n}" for n in doc["notes"]]
    if beyond:
        lines += ["", f"## Killed only in the confirmation pass, by a test beyond the cap ({len(beyond)})", ""]
        lines += [f"- {_mutant(r)} (killed by `{r.get('killed_by', r['status'])}`)" for r in beyond]
    timeouts = [r for r in results if r["status"] != "killed" and r["status"] in KILLED]
    if timeouts:
        lines += ["", f"## Killed by timeout or crash ({len(timeouts)})", ""]
        lines += [f"- {_mutant(r)} ({r['status']})" for r in timeouts]
    return "\n".join(lines) + "\n"
