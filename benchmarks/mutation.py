"""Mutation score of the test suite over the model, the thresholds, the schedulers, the simulator,
KV blocks and metrics: how many small planted bugs the tests catch.

    nice -n 19 python benchmarks/mutation.py [--sample 400] [--seed 0] [--only PATH,...]
        [--out docs/mutation.md] [--json docs/mutation.json] [--render-only]

How it works (too slow for CI: rerun it whenever those modules change):
1. The tracked tree is copied to a temporary folder; the worktree itself is never edited.
2. A traced baseline run of the suite (GPU tests excluded) records, per test, the functions of
   the mutated modules it calls; tests failing on the unmutated tree are left out (and listed).
   `--baseline-cache FILE` keeps the maps of unchanged test files only while nothing else in the
   tree changed (code, tests/data, helpers), and traces a test that failed last time again: a
   cached failure of an older tree once kept 50 sound tests (the golden runs among them) out.
3. Mutants come from `mutation_ops.py` (one token changed each). `--sample N` draws a seeded
   sample of N mutants, stratified by module (each module's share of all mutants, at least one).
4. Each mutant is written into the copy and only the tests that called its function (all tests
   touching the module and every test of a file importing it, for module-level code and for
   functions only run at import) run, fastest first, stopping at the first
   failure, in a forked child of a process that already imported the heavy libraries; a child
   running past 4× the baseline time of its tests + 90 s (collection included) is killed (counted
   as killed by timeout).
   A mutant no test reaches survives without a run ("not covered").
   Confirmation pass: `--max-tests` caps that selection; a mutant surviving the capped selection
   then runs up to `--confirm` more of it (the same ranking; its kills are listed apart in the
   report, and so is how many of a survivor's tests were still left out). A listed equivalent (out
   of the score either way) skips it.
5. Score = killed / (mutants − equivalent mutants); equivalents are listed in
   `mutation_equivalents.py` with why, matched by file, source line text and edit.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from mutation_equivalents import reason_for  # noqa: E402
from mutation_ops import Mutant, find_mutants  # noqa: E402
from mutation_report import render  # noqa: E402

TARGETS = ("fluid/*.py", "thresholds/*.py", "runtime/schedulers/*.py", "runtime/sim.py", "runtime/executor.py", "runtime/kv_blocks.py",
           "runtime/metrics.py")
SKIPPED_TESTS = ("tests/test_gpu_*.py", "tests/test_checkpoint_loading.py", "tests/test_import_boundaries.py")
# the parent imported hypothesis before pytest could rewrite its plugin: that warning is expected
RUNNER_FILES = ("benchmarks/mutation", "docs/mutation")  # the runner and its outputs (every seed's page): no test reads them
OPEN = ("survived", "not covered", "equivalent", "line gone")  # what --recheck runs again
PYTEST_ARGS = ["-q", "-p", "no:cacheprovider", "--hypothesis-seed=0", "-o", "addopts=--strict-markers",
               "-W", "ignore::pytest.PytestAssertRewriteWarning"]


def target_files(root: Path, only: list[str] | None) -> list[str]:
    files = sorted({str(p.relative_to(root)) for pat in TARGETS for p in root.glob(pat)})
    return [f for f in files if not only or f in only]


def copy_tree(dest: Path) -> None:
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.splitlines()
    for rel in listed:
        src = ROOT / rel
        if src.is_file() and not rel.startswith("docs/"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    for rel in ("docs",):  # some tests read committed result files
        if (ROOT / rel).is_dir():
            shutil.copytree(ROOT / rel, dest / rel, dirs_exist_ok=True)


def preload() -> None:
    """Import the heavy libraries once in the parent so every forked child starts warm."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import hypothesis  # noqa: F401
        import hypothesis.extra._patching  # noqa: F401  (imported on a failure; warns under -W error)
        import numpy  # noqa: F401
        import pytest  # noqa: F401
        import scipy.integrate  # noqa: F401
        import scipy.optimize  # noqa: F401
        import sympy  # noqa: F401
        import yaml  # noqa: F401
        for name in ("cvxpy", "jsonschema", "matplotlib"):
            try:
                __import__(name)
            except ImportError:
                pass


# --- children --------------------------------------------------------------------------------
class _Recorder:
    """pytest plugin: per test, the (file, first line) of every function of the tree it called."""

    def __init__(self, root: str):
        self.root = root + os.sep
        self.calls: dict[str, list] = {}
        self.durations: dict[str, float] = {}
        self.failed: list[str] = []

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item, nextitem):
        seen: set = set()
        add = seen.add

        def trace(frame, event, arg):  # call events only: returning None skips line tracing
            add(frame.f_code)

        start = time.perf_counter()
        sys.settrace(trace)
        try:
            yield
        finally:
            sys.settrace(None)
        self.durations[item.nodeid] = time.perf_counter() - start
        root, n = self.root, len(self.root)
        self.calls[item.nodeid] = sorted({(c.co_filename[n:], c.co_firstlineno) for c in seen
                                          if c.co_filename.startswith(root)})

    def pytest_runtest_logreport(self, report):
        if report.failed and report.nodeid not in self.failed:
            self.failed.append(report.nodeid)


class _FirstFailure:
    def __init__(self):
        self.nodeid = None

    def pytest_runtest_logreport(self, report):
        if report.failed and self.nodeid is None:
            self.nodeid = report.nodeid


def _child(tree: Path, args: list[str], plugin, out_file: Path, write) -> None:
    """In a forked child: run pytest on the copy, write the plugin's result, exit."""
    os.setpgid(0, 0)
    code = 70
    try:
        fd = os.open(os.environ.get("MUTATION_CHILD_LOG", os.devnull), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        os.dup2(fd, 1), os.dup2(fd, 2)
        os.chdir(tree)
        sys.path.insert(0, str(tree))
        sys.dont_write_bytecode = True
        import pytest

        code = int(pytest.main(args + PYTEST_ARGS, plugins=[plugin]))
        out_file.write_text(json.dumps(write(plugin, code)))
    except BaseException:
        import traceback

        Path(str(out_file) + ".err").write_text(traceback.format_exc())
    finally:
        os._exit(code)


def run_child(tree: Path, args: list[str], plugin, write, timeout_s: float) -> tuple[dict | None, bool]:
    """Fork, run, wait at most `timeout_s`; (the child's result or None, whether it timed out)."""
    out_file = Path(tempfile.mktemp(prefix="mut-", suffix=".json", dir="/tmp"))
    pid = os.fork()
    if pid == 0:
        _child(tree, args, plugin, out_file, write)
    deadline = time.monotonic() + timeout_s
    while True:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            os.waitpid(pid, 0)
            out_file.unlink(missing_ok=True)
            return None, True
        time.sleep(0.02)
    if not out_file.exists():
        return None, False
    result = json.loads(out_file.read_text())
    out_file.unlink()
    return result, False


def baseline(tree: Path, cache: Path | None = None) -> dict:
    """The traced run of every test file. With `cache` (a previous baseline of the same source
    tree), only test files whose text changed since are traced again; the others' maps are kept."""
    import hashlib

    tests = sorted(str(p.relative_to(tree)) for p in (tree / "tests").glob("test_*.py"))
    skipped = {str(p.relative_to(tree)) for pat in SKIPPED_TESTS for p in tree.glob(pat)}
    files = [t for t in tests if t not in skipped]
    digest = {t: hashlib.sha256((tree / t).read_bytes()).hexdigest() for t in files}
    # everything else the tests read (the code, tests/data, helpers, docs): when any of it changed,
    # the cached maps and verdicts say nothing about this tree and every file is traced again
    rest = hashlib.sha256()
    for p in sorted(q for q in tree.rglob("*") if q.is_file()):
        rel = str(p.relative_to(tree))
        if rel not in digest and not rel.startswith(RUNNER_FILES):
            rest.update(rel.encode() + b"\0" + p.read_bytes() + b"\0")
    digest["<rest of the tree>"] = rest.hexdigest()
    old = json.loads(cache.read_text()) if cache is not None and cache.exists() else None
    if old is not None and old["digest"].get("<rest of the tree>") != digest["<rest of the tree>"]:
        old = None
    # a test that failed last time is traced again: a failure is never carried over from a cache
    refail = {t.split("::")[0] for t in old["failed"]} if old is not None else set()
    args = [t for t in files if old is None or old["digest"].get(t) != digest[t] or t in refail]

    def write(plugin, code):
        return {"code": code, "failed": plugin.failed, "durations": plugin.durations,
                "calls": plugin.calls}

    result, timed_out = run_child(tree, args, _Recorder(str(tree)), write, 3600) if args else (
        {"failed": [], "durations": {}, "calls": {}}, False)
    if result is None:
        raise SystemExit("the traced baseline run did not finish" + (" (timeout)" if timed_out else ""))
    if old is not None:  # keep the unchanged files' maps
        kept = lambda test_id: test_id.split("::")[0] not in args and test_id.split("::")[0] in digest  # noqa: E731
        result["durations"] = {**{k: v for k, v in old["durations"].items() if kept(k)}, **result["durations"]}
        result["calls"] = {**{k: v for k, v in old["calls"].items() if kept(k)}, **result["calls"]}
        result["failed"] = [t for t in old["failed"] if kept(t) and t.split("::")[0] not in refail] + result["failed"]
    result["digest"] = digest
    if cache is not None:
        cache.write_text(json.dumps(result))
    return result


def direct_importers(tree: Path) -> dict[str, set[str]]:
    """Module path -> test files that import it by name (their tests run first for its mutants)."""
    import ast

    out: dict[str, set[str]] = {}
    for test in (tree / "tests").glob("*.py"):
        rel = str(test.relative_to(tree))
        for node in ast.walk(ast.parse(test.read_bytes())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
            for name in names:
                out.setdefault(name.replace(".", "/") + ".py", set()).add(rel)
                out.setdefault(name.replace(".", "/") + "/__init__.py", set()).add(rel)
    return out


def tests_for(mutant: Mutant, base: dict, by_function: dict, by_file: dict, direct: dict, max_tests: int) -> list[str]:
    """The tests that call the mutated function (module-level code: that touch the module):
    those of test files importing the module first, then the rest, fastest first; at most `max_tests`."""
    durations = base["durations"]
    near = direct.get(mutant.path, set())

    def import_time(path):  # code run at import: every test of a file importing the module runs it too
        failing = set(base["failed"])
        return by_file.get(path, set()) | {t for t in durations if t.split("::")[0] in near and t not in failing}

    if mutant.function_line:
        # a function no test calls may still run at import time (a module constant built by a
        # call, like OPERATING_SHAPES): then the tests touching its module stand in, as for module code
        ids = by_function.get((mutant.path, mutant.function_line)) or import_time(mutant.path)
    else:
        ids = import_time(mutant.path)
    ranked = sorted(ids, key=lambda t: (t.split("::")[0] not in near, durations.get(t, 0.0), t))
    return ranked[:max_tests] if max_tests else ranked


def run_tests(tree: Path, tests: list[str], base: dict, budget: float) -> dict:
    """Run `tests` on the (mutated) copy, stopping at the first failure: the mutant's status."""
    result, timed_out = run_child(tree, ["-x"] + tests, _FirstFailure(),
                                  lambda p, code: {"code": code, "by": p.nodeid}, budget)
    if timed_out:
        return {"status": "killed (timeout)"}
    if result is None:
        return {"status": "killed (crash)"}
    if result["code"] == 0:
        return {"status": "survived"}
    return {"status": "killed", "killed_by": result["by"]}


def run_mutants(tree: Path, mutants: list[Mutant], base: dict, log, max_tests: int, checkpoint,
                confirm: int = 0) -> list[dict]:
    failing = set(base["failed"])
    by_function: dict = {}
    by_file: dict = {}
    for test, calls in base["calls"].items():
        if test in failing:
            continue
        for path, line in calls:
            by_function.setdefault((path, line), set()).add(test)
            by_file.setdefault(path, set()).add(test)
    direct = direct_importers(tree)
    results = []
    originals: dict[str, bytes] = {}
    for i, m in enumerate(mutants, 1):
        every = tests_for(m, base, by_function, by_file, direct, 0)
        tests = every[:max_tests] if max_tests else every
        entry = {"key": m.key, "path": m.path, "line": m.line, "operator": m.operator, "original": m.original,
                 "replacement": m.replacement, "function": m.function, "tests": len(tests)}
        src_path = tree / m.path
        source = originals.setdefault(m.path, src_path.read_bytes())
        entry["source_line"], entry["column"] = line_text_and_column(tree, m)
        start = time.monotonic()
        if not tests:
            entry["status"] = "not covered"
        else:
            budget = 4 * sum(base["durations"].get(t, 1.0) for t in tests) + 90  # + collecting the test files
            src_path.write_bytes(m.apply(source))
            try:
                entry.update(run_tests(tree, tests, base, budget))
                rest = every[len(tests):]
                listed = reason_for(m.path, entry["source_line"], m.original, m.replacement, entry["column"])
                if entry["status"] == "survived" and rest and confirm and not listed:
                    # confirmation pass: a survivor of the capped selection runs more of the tests that
                    # call its function (the same ranking, at most `confirm` more); a kill here is
                    # reported as such, and the tests still left out are counted
                    entry["tests_beyond_cap"] = min(len(rest), confirm)
                    entry["tests_not_run"] = max(0, len(rest) - confirm)
                    rest = rest[:confirm]
                    again = run_tests(tree, rest, base, 4 * sum(base["durations"].get(t, 1.0) for t in rest) + 90)
                    if again["status"] != "survived":
                        entry.update(again, killed_beyond_cap=True)
            finally:
                src_path.write_bytes(source)
        entry["seconds"] = round(time.monotonic() - start, 2)
        results.append(entry)
        if i % 10 == 0:
            checkpoint(results)
        log(f"[{i}/{len(mutants)}] {entry['status']:<16} {m.path}:{m.line} {m.original!r}->{m.replacement!r} "
            f"({len(tests)} tests{' + %d beyond the cap' % entry['tests_beyond_cap'] if 'tests_beyond_cap' in entry else ''}"
            f", {entry['seconds']} s)")
    return results


def confirm_kills(tree: Path, results: list[dict], log) -> None:
    """A kill counts only if the killing test passes on the unmutated tree (run again now, once per
    test): a test that fails by itself (order-dependent, or broken meanwhile) kills nothing."""
    verdict: dict[str, bool] = {}
    for r in results:
        test = r.get("killed_by")
        if r["status"] != "killed" or not test:
            continue
        if test not in verdict:
            result, _ = run_child(tree, [test], _FirstFailure(), lambda p, code: {"code": code}, 600)
            verdict[test] = result is not None and result["code"] == 0
            if not verdict[test]:
                log(f"{test} fails on the unmutated tree: its kills do not count")
        if not verdict[test]:
            r["status"], r["killed_by_failing_test"] = "survived", r.pop("killed_by")


def sample_mutants(all_mutants: dict[str, list[Mutant]], sample: int | None, seed: int) -> list[Mutant]:
    total = sum(len(v) for v in all_mutants.values())
    if sample is None or sample >= total:
        return [m for v in all_mutants.values() for m in v]
    rng = random.Random(seed)
    out = []
    for path in sorted(all_mutants):
        ms = all_mutants[path]
        if not ms:
            continue
        k = max(1, round(sample * len(ms) / total))
        out.extend(rng.sample(ms, min(k, len(ms))))
    rng.shuffle(out)  # modules interleaved: a partial run is already a fair sample
    return out


def find_again(previous: list[dict], tree: Path, all_mutants: dict[str, list[Mutant]]) -> dict[str, Mutant]:
    """The current tree's mutant for each previous result, matched by file, source line text and
    edit (byte offsets move when a file changes); results whose line is gone are left out."""
    by_text: dict[tuple, list[Mutant]] = {}
    for path, ms in all_mutants.items():
        for m in ms:
            text, col = line_text_and_column(tree, m)
            by_text.setdefault((path, text, m.operator, m.original, m.replacement, col), []).append(m)
    found = {}
    for r in previous:
        # the column within the stripped line tells apart two edits of the same token on one line
        # (`1` → `0` in `n[k - 1]` or in `range(1, …)`); the nearest line, two equal lines
        options = by_text.get((r["path"], r["source_line"], r["operator"], r["original"], r["replacement"], r.get("column")))
        if options:
            best = min(options, key=lambda m: abs(m.line - r["line"]))
            options.remove(best)
            found[r["key"]] = best
    return found


def line_text_and_column(tree: Path, m: Mutant) -> tuple[str, int]:
    """The mutant's stripped source line and its offset in that stripped line (in bytes)."""
    source = (tree / m.path).read_bytes()
    start = source.rfind(b"\n", 0, m.start) + 1
    raw = source[start:].split(b"\n", 1)[0]
    return raw.decode().strip(), m.start - start - (len(raw) - len(raw.lstrip()))


def machine() -> dict:
    return {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "platform": platform.platform(), "load_average": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sample", type=int, default=400, help="mutants to draw (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-tests", type=int, default=40, help="tests run per mutant at most (0: all)")
    ap.add_argument("--confirm", type=int, default=200, metavar="N",
                    help="confirmation pass: a survivor of the capped selection runs up to N more of its tests (0: none)")
    ap.add_argument("--only", default="", help="comma-separated module paths (default: every target)")
    ap.add_argument("--out", default="docs/mutation.md")
    ap.add_argument("--json", default="docs/mutation.json")
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from the JSON")
    ap.add_argument("--baseline-cache", default="", help="reuse this traced baseline for unchanged test files")
    ap.add_argument("--recheck", action="store_true",
                    help="rerun only the survivors of the JSON's run on the current tree (after new tests)")
    args = ap.parse_args(argv)
    if args.render_only:
        doc = json.loads((ROOT / args.json).read_text())
        (ROOT / args.out).write_text(render(doc))
        return 0
    only = [p for p in args.only.split(",") if p] or None
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="fluidsched-mutation-") as tmp:
        tree = Path(tmp)
        copy_tree(tree)
        preload()
        all_mutants = {p: find_mutants(p, (tree / p).read_bytes()) for p in target_files(tree, only)}
        previous = json.loads((ROOT / args.json).read_text()) if args.recheck else None
        if previous is not None:
            args.seed, args.sample, args.max_tests = previous["seed"], previous["sample"], previous["max_tests"]
            open_rows = [r for r in previous["results"] if r["status"] in OPEN]
            again = find_again(open_rows, tree, all_mutants)
            chosen = list(again.values())
        else:
            chosen = sample_mutants(all_mutants, args.sample or None, args.seed)
        print(f"{sum(map(len, all_mutants.values()))} mutants in {len(all_mutants)} modules; running {len(chosen)}",
              flush=True)
        t0 = time.monotonic()
        base = baseline(tree, Path(args.baseline_cache) if args.baseline_cache else None)
        print(f"baseline: {len(base['durations'])} tests in {time.monotonic() - t0:.0f} s, "
              f"failing on the unmutated tree: {base['failed']}", flush=True)
        command = "nice -n 19 python benchmarks/mutation.py " + " ".join(argv if argv is not None else sys.argv[1:])

        def document(results, partial):
            return {
                "command": command, "seed": args.seed, "sample": args.sample, "max_tests": args.max_tests,
                "confirm": args.confirm,
                "machine": machine(), "wall_s": round(time.monotonic() - started, 1), "partial": partial,
                "mutants_total": {p: len(v) for p, v in all_mutants.items()},
                "baseline_failing": base["failed"], "baseline_tests": len(base["durations"]),
                "results": results,
            }

        def checkpoint(results):
            (ROOT / args.json).write_text(json.dumps(document(results, True), indent=1) + "\n")

        results = run_mutants(tree, chosen, base, lambda s: print(s, flush=True), args.max_tests, checkpoint,
                              confirm=args.confirm)
        confirm_kills(tree, results, lambda s: print(s, flush=True))
    doc = document(results, False)
    if previous is not None:  # the first pass's killed mutants stand; its survivors are replaced
        rerun = {m.key: r for m, r in zip(chosen, results)}
        merged = []
        for r in previous["results"]:
            if r["status"] in OPEN:
                m = again.get(r["key"])
                r = rerun[m.key] if m is not None else {**r, "status": "line gone"}
                r["rechecked"] = True
            merged.append(r)
        first = previous if "first_pass_command" not in previous else {
            "command": previous["first_pass_command"], "wall_s": previous["first_pass_wall_s"],
            "machine": previous["first_pass_machine"]}
        earlier = previous.get("rechecks", []) + ([{"command": previous["command"], "wall_s": previous["recheck_wall_s"],
                                                    "machine": previous["machine"]}] if first is not previous else [])
        doc.update(results=merged, first_pass_command=first["command"], first_pass_wall_s=first["wall_s"],
                   first_pass_machine=first["machine"], recheck_wall_s=doc["wall_s"], rechecks=earlier,
                   wall_s=previous["wall_s"] + doc["wall_s"], mutants_total=previous["mutants_total"])
    (ROOT / args.json).write_text(json.dumps(doc, indent=1) + "\n")
    (ROOT / args.out).write_text(render(doc))
    print((ROOT / args.out).read_text().split("\n## ")[1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
