"""Workload presets: one YAML file each in this folder, loadable by name.

`fluidsched fluid p512d20` or `load_workload("p512d20")`. Each file's leading comment says where
its numbers come from (the experiments of arXiv 2504.11320 and arXiv 2508.01002 for the papers' configurations).
"""

from __future__ import annotations

import difflib
from pathlib import Path

from fluid.errors import InputError

PRESET_DIR = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    """Names of every preset, sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_path(name: str) -> Path:
    path = PRESET_DIR / f"{name}.yaml"
    if not path.is_file():
        raise unknown_preset_error(name)
    return path


def unknown_preset_error(name: str) -> InputError:
    names = preset_names()
    close = difflib.get_close_matches(name, names, n=1, cutoff=0.5)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return InputError(
        f"{name!r} is neither a workload file nor a preset{hint}; valid presets: {', '.join(names)}",
        field="workload",
    )
