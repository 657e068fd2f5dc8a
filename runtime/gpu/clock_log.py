"""The GPU's clocks, power and temperature sampled through a run, to tell a slower GPU from a
slower host when the same step takes longer at one time than another.

`GpuClockLog` runs `nvidia-smi --query-gpu=... -lms PERIOD -f FILE` beside the run (its own
process: nothing in ours waits on it) and reads the file back; `window(t0, t1)` is the median of
each field over the samples taken between two wall times (`time.time()`), which the run records
beside each calibration point and each live run. Without `nvidia-smi` the log is empty and every
window says so (`samples`: 0).
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import time
from pathlib import Path

# what a sample holds after its timestamp; the last is a bit mask of why the clocks are held down
# (0 = not held: the GPU runs at what its load asks)
FIELDS = ("clocks.sm", "clocks.mem", "power.draw", "temperature.gpu", "clocks_event_reasons.active")


def parse_samples(text: str, fields=FIELDS) -> list[dict]:
    """The lines `nvidia-smi --query-gpu=timestamp,FIELDS --format=csv,noheader,nounits` wrote, as
    {"at_s": epoch seconds, field: float or None}; a line of another shape is skipped (the file
    may end in a half-written line while the log runs). The timestamp is the host's local time,
    as `time.time()` reads it through `time.mktime`."""
    out = []
    for line in text.splitlines():
        values = [v.strip() for v in line.split(",")]
        if len(values) != 1 + len(fields):
            continue
        try:
            stamp, _, frac = values[0].partition(".")
            at = time.mktime(time.strptime(stamp, "%Y/%m/%d %H:%M:%S")) + (float("0." + frac) if frac else 0.0)
        except ValueError:
            continue
        sample = {"at_s": at}
        for name, value in zip(fields, values[1:]):
            try:
                sample[name] = float(int(value, 16)) if value.startswith("0x") else float(value)
            except ValueError:
                sample[name] = None  # "[N/A]"
        out.append(sample)
    return out


def read_samples(path: Path) -> list[dict]:
    """The samples of a log file written by `GpuClockLog`, its fields unknown: the full field set,
    or the one without the reasons field (a driver that offered none)."""
    text = Path(path).read_text(errors="replace")
    return parse_samples(text) or parse_samples(text, FIELDS[:-1])


def window_summary(samples: list[dict], t0: float, t1: float, fields=FIELDS) -> dict:
    """Median of each field over the samples in [t0, t1], the least SM clock, the share of each
    reason mask, and the share of samples whose clocks were held down by power, heat or a slowdown."""
    inside = [s for s in samples if t0 <= s["at_s"] <= t1]
    out: dict = {"samples": len(inside)}
    for name in fields:
        values = [s[name] for s in inside if s.get(name) is not None]
        if values and name != "clocks_event_reasons.active":
            out[name] = statistics.median(values)
    sm = [s["clocks.sm"] for s in inside if s.get("clocks.sm") is not None]
    if sm:
        out["clocks.sm_min"] = min(sm)
    reasons = [int(s["clocks_event_reasons.active"]) for s in inside if s.get("clocks_event_reasons.active") is not None]
    if reasons:
        out["reasons_share"] = {hex(r): reasons.count(r) / len(reasons) for r in sorted(set(reasons))}
        # 0x1 (idle) and 0x2 (the applications-clocks setting) do not slow work down; the rest do
        # (power cap 0x4, hardware slowdown 0x8, sync boost 0x10, thermal 0x20 / 0x40, power brake 0x80)
        out["held_down_share"] = sum(1 for r in reasons if r & ~0x3) / len(reasons)
    return out


class GpuClockLog:
    """nvidia-smi sampling into `path` every `period_ms` while the log is open (a context manager)."""

    def __init__(self, path: Path, period_ms: int = 200):
        self.path, self.period_ms = Path(path), period_ms
        self.fields = FIELDS
        self._proc = None

    def _command(self, fields) -> list[str]:
        return ["nvidia-smi", f"--query-gpu=timestamp,{','.join(fields)}", "--format=csv,noheader,nounits"]

    def start(self) -> bool:
        """Start sampling; False (and an empty log) without nvidia-smi or where it refuses the query
        (an older driver names the reasons field `clocks_throttle_reasons.active`: tried next)."""
        if shutil.which("nvidia-smi") is None:
            return False
        for fields in (FIELDS, FIELDS[:-1] + ("clocks_throttle_reasons.active",), FIELDS[:-1]):
            try:
                probe = subprocess.run(self._command(fields), capture_output=True, text=True, timeout=10, check=False)
            except (OSError, subprocess.SubprocessError):
                return False
            if probe.returncode == 0:
                self.fields = tuple("clocks_event_reasons.active" if f == "clocks_throttle_reasons.active" else f for f in fields)
                self._proc = subprocess.Popen(self._command(fields) + ["-lms", str(self.period_ms), "-f", str(self.path)],
                                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                return True
        return False

    def samples(self) -> list[dict]:
        if not self.path.is_file():
            return []
        return parse_samples(self.path.read_text(errors="replace"), self.fields)

    def window(self, t0: float, t1: float) -> dict:
        return window_summary(self.samples(), t0, t1, self.fields)

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
            self._proc = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()
        return False


def by_pass_region(rows: list[dict], samples: list[dict]) -> dict:
    """For a calibration table (rows with `at_s`, in the order timed): per pass and region (the
    label's first word), the GPU clock summary over the samples taken while its rows ran (a row
    runs from its `at_s` to the next row's; the last for 8 times its step) and the median host
    probe of its rows when they have one. Keyed "pass P region", in the order first timed; in a
    shuffled pass a region's rows are scattered, and each row still brings its own window. Rows
    without `at_s` (an older file, recorded live steps) give nothing."""
    timed = [r for r in rows if "at_s" in r]
    windows: dict[str, list[tuple[float, float]]] = {}
    loops: dict[str, list[float]] = {}
    for i, r in enumerate(timed):
        key = f"pass {r['pass']} {r['label'].split()[0]}"
        t1 = timed[i + 1]["at_s"] if i + 1 < len(timed) else r["at_s"] + 8 * r["time_s"]
        windows.setdefault(key, []).append((r["at_s"], t1))
        if "host_probe" in r:
            loops.setdefault(key, []).append(r["host_probe"]["python_loop_1e5_s"])
    out = {}
    for key, spans in windows.items():
        inside = [s for s in samples if any(t0 <= s["at_s"] <= t1 for t0, t1 in spans)]
        entry = {"points": len(spans), "seconds": sum(t1 - t0 for t0, t1 in spans),
                 "gpu_clocks": window_summary(inside, float("-inf"), float("inf"))}
        if key in loops:
            entry["python_loop_1e5_s_median"] = statistics.median(loops[key])
        out[key] = entry
    return out
