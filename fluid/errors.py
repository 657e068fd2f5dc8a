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
        where = ", ".join(p for p in (source, f"field '{field}'" if field else None) if p)
        super().__init__(f"{where}: {message}" if where else message)


class UnstableWorkloadError(FluidSchedError):
    """The load cannot be served stably (d_1·Σλa ≥ 1) or M* exceeds the KV capacity C."""

    exit_code = EXIT_UNSTABLE


class SolverError(FluidSchedError):
    """A solver returned a status other than optimal; the message says which constraint binds."""

    exit_code = EXIT_UNSTABLE
