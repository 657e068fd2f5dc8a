"""Typed errors shared by every package.

`InputError` is a bad input (file, field, value): the CLI prints its message as one paragraph and
exits with code 2. `UnstableWorkloadError` is a workload outside the stability region or over
memory: not a crash, the CLI reports it and exits with code 3 so scripts can tell.
"""

from __future__ import annotations

EXIT_BAD_INPUT = 2
EXIT_UNSTABLE = 3


class FluidSchedError(Exception):
    """Base class of every error this toolkit raises on purpose."""

    exit_code = 1


class InputError(FluidSchedError, ValueError):
    """A bad input. The message names where (file, field path), the bad value, and what to do."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        self.detail = message  # the message without its "source, field '...'" prefix: to re-raise it elsewhere
        where = ", ".join(p for p in (source, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnstableWorkloadError(FluidSchedError):
    """The load cannot be served stably (d_1·Σλa ≥ 1) or M* exceeds the KV capacity C."""

    exit_code = EXIT_UNSTABLE


class MissingDependencyError(FluidSchedError):
    """An optional package a command needs is not installed; the message says what to install."""

    exit_code = EXIT_BAD_INPUT


class SolverError(FluidSchedError):
    """A solver returned a status other than optimal; the message says which constraint binds."""

    exit_code = EXIT_UNSTABLE


def closest_key_hint(key: str, allowed) -> str:
    """' (did you mean 'x'?)' for a probable typo of one of `allowed`, else ''."""
    import difflib  # local: only needed on the error path

    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_keys(
    data: object,
    *,
    allowed: tuple[str, ...] | frozenset[str] | list[str],
    required: tuple[str, ...] = (),
    source: str | None,
    field: str,
    hints: dict[str, str] | None = None,
) -> dict:
    """Check that `data` is a mapping with only `allowed` keys and every `required` one.

    Unknown keys name the closest valid key (typos); `hints` maps a known-wrong key to advice.
    Returns `data` so callers can chain. `field` is the path of the mapping ('' for the top).
    """
    where = field or "(top level)"
    if not isinstance(data, dict):
        raise InputError(
            f"must be a mapping of keys to values, got {type(data).__name__} {data!r:.80}",
            source=source,
            field=where,
        )
    prefix = f"{field}." if field else ""
    for key in data:
        if key not in allowed:
            advice = (hints or {}).get(key) or (
                f"valid keys here: {', '.join(sorted(allowed))}{closest_key_hint(key, allowed)}"
            )
            raise InputError(f"unknown key {key!r}: {advice}", source=source, field=f"{prefix}{key}")
    missing = [k for k in required if k not in data]
    if missing:
        raise InputError(
            f"missing required key(s) {', '.join(map(repr, missing))}; add them (valid keys: "
            f"{', '.join(sorted(allowed))})",
            source=source,
            field=where,
        )
    return data


def with_source(err: InputError, source: str | None) -> InputError:
    """The same error with `source` (a file or preset) filled in, for errors raised by
    constructors that do not know where their values came from."""
    if err.source is not None or source is None:
        return err
    return InputError(err.detail, source=source, field=err.field)
