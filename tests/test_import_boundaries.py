"""Import boundaries (DESIGN.md): each package imported in a fresh interpreter, sys.modules checked."""

from __future__ import annotations

import subprocess
import sys

import pytest

CASES = [
    ("fluid", ("torch", "cvxpy", "scipy")),
    ("fluid.equilibrium", ("torch", "cvxpy", "scipy")),
    ("fluid.cli", ("torch", "cvxpy", "scipy")),
    ("fluid.lp", ("torch",)),
    ("fluid.ode", ("torch",)),
    ("thresholds", ("torch",)),
    ("runtime", ("torch", "cvxpy", "scipy")),
    ("runtime.sim", ("torch", "cvxpy", "scipy")),
    ("runtime.schedulers.base", ("torch", "cvxpy", "scipy")),
]


@pytest.mark.parametrize("module, forbidden", CASES, ids=[c[0] for c in CASES])
def test_import_pulls_no_forbidden_package(module, forbidden):
    code = (
        f"import sys, importlib; importlib.import_module({module!r}); "
        f"print(','.join(m for m in {forbidden!r} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"importing {module} pulled {out.stdout.strip()}"


def test_fluid_closed_form_cli_path_stays_light(tmp_path):
    """`fluidsched fluid` without --lp/--ode/--capacity imports neither cvxpy nor scipy."""
    path = tmp_path / "w.json"
    path.write_text(
        '{"name": "w", "kv_capacity_tokens": 100000, "batch_time": {"kind": "affine", "d0_s": 0.01, '
        '"d1_s_per_token": 1e-7}, "types": [{"name": "a", "prefill": 100, "decode": 50, "rate_per_s": 5.0}]}'
    )
    code = (
        "import sys; from validation.cli import main; rc = main(['fluid', %r, '--json']); "
        "print('|', rc, ','.join(m for m in ('cvxpy', 'scipy', 'torch') if m in sys.modules))" % str(path)
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.rsplit("|", 1)[1].split() == ["0"], out.stdout + out.stderr
