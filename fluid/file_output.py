"""Writing outputs so that nothing is lost and nothing is half-written.

- `check_out_dir` / `check_out_file` run before any work: an `--out` that is a file, that cannot
  be created (unwritable, under /proc), or a folder holding someone else's files is an
  InputError at once, not a traceback after the run.
- `atomic_folder` builds a run folder under a temporary name next to the target and renames it
  into place only when complete; a folder from an earlier run is replaced as a whole, so a stale
  `policy.json` cannot survive into the new run. On any failure (disk full, Ctrl-C) the
  temporary folder is removed and the earlier folder is left as it was.
- `atomic_write_text` does the same for one file (temporary file + `os.replace`).
- `finite_json` turns non-finite floats into null: JSON has no NaN or Infinity.

Every completed output is recorded (`written_paths`) so that an interrupted command can say
what it kept.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
from pathlib import Path

from fluid.errors import InputError

# files that mark a folder as an earlier output of ours, which a new run may replace
OUTPUT_MARKERS = ("config.json", "summary.json", "compare.json", "demo.json")

_written: list[str] = []


def written_paths() -> list[str]:
    """Outputs completed (renamed into place) so far in this process, in order."""
    return list(_written)


def forget_written() -> None:
    """Start a new command's record of completed outputs."""
    _written.clear()


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _probe_writable(path: Path, *, flag: str) -> None:
    """Create and remove a temporary folder where `path` will go (the only reliable test: as
    root, os.access says yes to /proc)."""
    parent = _nearest_existing(path.parent)
    if not parent.is_dir():
        raise InputError(f"{parent} is a file, so {path} cannot be created under it; choose another {flag}",
                         field=flag.lstrip("-"))
    try:
        probe = tempfile.mkdtemp(prefix=".fluidsched-probe-", dir=parent)
        os.rmdir(probe)
    except OSError as err:
        raise InputError(f"cannot write under {parent} ({err.strerror or err}); choose a writable {flag}",
                         field=flag.lstrip("-")) from None


def check_writable_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """A folder that files can be added to (it need not exist yet); returns it as a Path."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} is a file, not a folder; give a folder for {flag} (it is created if needed)",
                         field=flag.lstrip("-"))
    _probe_writable(out / "x" if out.is_dir() else out, flag=flag)
    return out


def check_out_dir(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    """Check an output folder that a run will replace whole, before the work starts."""
    out = check_writable_dir(path, flag=flag)
    if out.is_dir():
        entries = [e.name for e in out.iterdir()]
        if entries and not any(m in entries for m in OUTPUT_MARKERS):
            raise InputError(
                f"{out} already holds files that are not a fluidsched output ({', '.join(sorted(entries)[:3])}"
                f"{', ...' if len(entries) > 3 else ''}); the run would replace the whole folder, so choose a new or "
                f"empty folder for {flag}",
                field=flag.lstrip("-"),
            )
    return out


def check_out_file(path: str | os.PathLike, *, flag: str = "--out") -> Path:
    out = Path(path)
    if out.is_dir():
        raise InputError(f"{out} is a folder; give a file name for {flag}", field=flag.lstrip("-"))
    _probe_writable(out, flag=flag)
    return out


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike):
    """Yield a temporary folder; on success it replaces `path` whole, on failure it is removed."""
    target = Path(path)
    check_out_dir(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        old = None
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
            os.rename(target, old / "previous")
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except OSError as err:
        shutil.rmtree(tmp, ignore_errors=True)
        raise InputError(f"cannot write the output folder ({err.strerror or err}); nothing was written and any "
                         f"earlier folder there is unchanged", source=str(target)) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _written.append(str(target))


def atomic_write_text(path: str | os.PathLike, text: str, *, record: bool = False) -> Path:
    """Write `text` to `path` through a temporary file and a rename (never a half-written file).

    `record`: list it among the outputs kept (`written_paths`); files inside an atomic folder are not.
    """
    target = Path(path)
    fd = None
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.partial-", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            fd = None
            handle.write(text)
        os.replace(tmp, target)
        tmp = None
    except OSError as err:
        raise InputError(f"cannot write the file ({err.strerror or err}); nothing was written and any earlier file "
                         f"there is unchanged", source=str(target)) from None
    finally:
        if fd is not None:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
    if record:
        _written.append(str(target))
    return target


def finite_json(value):
    """A copy of `value` (dicts, lists, numbers, numpy scalars/arrays) with NaN and ±inf as None."""
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return finite_json(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
