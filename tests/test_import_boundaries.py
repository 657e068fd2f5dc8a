"""Import boundaries (docs/design-notes.md), found by walking the packages.

Every module is imported in a fresh interpreter and `sys.modules` is checked:
- `fluid/`, `thresholds/`, `validation/`, `paper_figures/` and every `runtime/` module outside
  `runtime/gpu/` pull in no torch and no triton;
- `runtime/` (outside `runtime/gpu/`) pulls in no cvxpy and no scipy either, since the GPU machine
  runs it without them;
- the torch-free core of `fluid/` (everything but the LP, ODE and fits) pulls in no cvxpy or scipy.
"""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("fluid", "thresholds", "runtime", "validation", "paper_figures")


def _modules(package: str) -> list[str]:
    names = [package]
    for info in pkgutil.walk_packages([str(ROOT / package)], prefix=package + "."):
        names.append(info.name)
    return sorted(names)


ALL_MODULES = [m for p in PACKAGES for m in _modules(p)]
GPU_MODULES = [m for m in ALL_MODULES if m.startswith("runtime.gpu.")]


def _forbidden(module: str) -> tuple[str, ...]:
    if module == "runtime.gpu" or module.startswith("runtime.gpu."):
        # the package itself must stay light; its modules are where torch lives
        return ("cvxpy", "scipy") if module != "runtime.gpu" else ("torch", "triton", "cvxpy", "scipy")
    if module.startswith("runtime"):
        return ("torch", "triton", "cvxpy", "scipy")
    return ("torch", "triton")


def _import_one(module: str, watch: tuple[str, ...]) -> tuple[int, str, str]:
    code = f"import importlib, sys; importlib.import_module({module!r}); print(','.join(w for w in {watch!r} if w in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    return r.returncode, r.stdout.strip(), r.stderr[-400:]


def _imported(modules: list[str], watch: tuple[str, ...]) -> dict[str, tuple[int, str, str]]:
    """Import each module in its own fresh interpreter; report which watched packages it pulled."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(modules, pool.map(lambda m: _import_one(m, watch), modules)))


@pytest.fixture(scope="module")
def import_report():
    watch = ("torch", "triton", "cvxpy", "scipy", "numpy")
    return _imported(ALL_MODULES, watch)


def test_walk_finds_every_package_and_the_gpu_room():
    assert "runtime.sim" in ALL_MODULES and "thresholds.policy" in ALL_MODULES
    assert "runtime.gpu.engine" in GPU_MODULES and "runtime.gpu.kernels.gemv_triton" in GPU_MODULES
    # no torch module is left outside runtime/gpu/
    for path in (ROOT / "runtime").rglob("*.py"):
        rel = path.relative_to(ROOT)
        if rel.parts[:2] == ("runtime", "gpu"):
            continue
        text = path.read_text()
        assert "import torch" not in text and "import triton" not in text, f"{rel} imports torch/triton outside runtime/gpu/"


@pytest.mark.parametrize("module", [m for m in ALL_MODULES if not m.startswith("runtime.gpu.")])
def test_module_pulls_no_forbidden_package(module, import_report):
    rc, pulled, err = import_report[module]
    assert rc == 0, f"importing {module} failed: {err}"
    bad = [p for p in pulled.split(",") if p and p in _forbidden(module)]
    assert not bad, f"importing {module} pulled {bad}"


@pytest.mark.parametrize("module", ["fluid", "fluid.equilibrium", "fluid.cli", "fluid.workload_io", "thresholds.policy"])
def test_light_modules_pull_no_solver(module, import_report):
    rc, pulled, err = import_report[module]
    assert rc == 0, err
    assert not {"cvxpy", "scipy"} & set(filter(None, pulled.split(","))), f"{module} pulled {pulled}"


@pytest.mark.parametrize("module", ["thresholds.policy", "thresholds.policy_parse", "runtime.policy_file"])
def test_the_policy_reader_is_standard_library_only(module, import_report):
    """The one policy reader runs on the GPU machine and in the runtime: no numpy either."""
    rc, pulled, err = import_report[module]
    assert rc == 0, err
    assert not set(filter(None, pulled.split(","))), f"{module} pulled {pulled}"


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
