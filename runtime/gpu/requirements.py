"""What `fluidsched run` and `calibrate` need beyond the main install, checked before any import.

The main install (`pip install torch && pip install -e .`) has torch but not transformers or
safetensors, which build the Llama model and read checkpoints: say exactly what to install
rather than fail with an import traceback. Imports no torch itself.
"""

from __future__ import annotations

import importlib.util

from fluid.errors import MissingDependencyError

GPU_PACKAGES = {"torch": "torch", "transformers": "transformers", "safetensors": "safetensors"}  # module -> pip name


def require_gpu_packages(command: str) -> None:
    missing = [pip for module, pip in GPU_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if not missing:
        return
    torch_first = "pip install torch==2.13.0 (or your CUDA build) && " if "torch" in missing else ""
    raise MissingDependencyError(
        f"`fluidsched {command}` needs {', '.join(missing)}, which the main install leaves out; install "
        f"{'them' if len(missing) > 1 else 'it'} with {torch_first}pip install -e \".[gpu]\" from the repository root"
    )
