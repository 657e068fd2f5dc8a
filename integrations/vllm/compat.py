"""The vLLM versions the scheduler class supports, checked before anything of vLLM's is touched.

The plugin subclasses `vllm.v1.core.sched.scheduler.Scheduler`, whose interface vLLM calls not
public: it overrides `add_request`, `schedule`, `get_request_counts`, `finish_requests` and the
private `_free_request`, and reads request fields (`next_decode_eligible_step`,
`num_output_placeholders`) and the KV cache manager's block pool. These were read in vLLM 0.32's
source; other minor versions rename or move them, so they are refused with a clear message
instead of failing mid-serve.
"""

from __future__ import annotations

import re

from fluid.errors import InputError

SUPPORTED_MIN = (0, 32)
SUPPORTED_BELOW = (0, 33)
SUPPORTED_RANGE = ">=0.32.0,<0.33"


def parse_version(text: str) -> tuple[int, int, int]:
    """(major, minor, patch) of a version string such as '0.32.0', '0.32.1rc1', '0.32.0+cpu'."""
    match = re.match(r"^\s*v?(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    if match is None:
        raise InputError(f"cannot read the vLLM version {text!r}", field="vllm.__version__")
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def check_supported(version: str) -> None:
    """InputError unless `version` is in SUPPORTED_RANGE."""
    major_minor = parse_version(version)[:2]
    if not SUPPORTED_MIN <= major_minor < SUPPORTED_BELOW:
        raise InputError(
            f"vLLM {version} is not supported by the fluidsched scheduler class (supported: vllm{SUPPORTED_RANGE}); "
            f"its private scheduler fields differ between minor versions: install vllm==0.32.* "
            f"(pip install -e \".[vllm]\") or serve without --scheduler-cls",
            field="vllm.__version__",
        )
