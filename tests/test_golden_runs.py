"""Golden runs: every policy's simulation on fixed workloads must reproduce its fingerprint.

A fingerprint (`benchmarks/sim_fingerprint.py`) is the run's headline summary and a SHA-256 over
every request's timestamps and the step log, for 300 requests of the `chat-d-ten-bins` preset on
its memory, a quarter and a twentieth of it (evictions) and one-token blocks. A rewrite for speed
or readability that changes any result fails here. After a deliberate change of results, rewrite
the file with `python benchmarks/sim_fingerprint.py --write-golden tests/data/golden_runs.json`
and say in the commit why the results moved.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))

from sim_fingerprint import GOLDEN_REQUESTS, golden_lines  # noqa: E402

GOLDEN = json.loads((ROOT / "tests" / "data" / "golden_runs.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def current():
    return golden_lines(GOLDEN["requests"])


def test_golden_file_covers_every_policy_and_variant(current):
    assert GOLDEN["requests"] == GOLDEN_REQUESTS
    assert sorted(current) == sorted(GOLDEN["runs"]), "the registry or the variants changed: rewrite the golden file"


@pytest.mark.parametrize("run", sorted(GOLDEN["runs"]))
def test_run_reproduces_its_fingerprint(run, current):
    assert current[run] == GOLDEN["runs"][run]
