"""The one number check of every input path (workload files, CLI flags, scheduler knobs, specs).

`check_number(value, field, ...)` returns the value when it is a number of the required kind and
range, else raises `InputError` naming the field and the value and saying what is allowed:
booleans are never numbers, NaN and infinity never pass (JSON cannot carry them and no quantity
here is infinite), an integer field refuses 3.0 with a hint to drop the decimal point (or, with
`whole_float`, takes it as 3: JSON Schema's reading of "integer", which the policy-file reader
follows). `hint` ends the message with what to do where the range alone does not say it.

Standard library only (the GPU machine and the torch-free runtime import it).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

from fluid.errors import InputError


def _fmt(x) -> str:
    return str(x) if isinstance(x, int) else f"{x:g}"


def _describe(integer: bool, minimum, strict_minimum: bool, maximum, strict_maximum: bool, unit: str) -> str:
    kind = "integer" if integer else "number"
    if maximum is None and minimum == 0:
        text = f"a {'positive' if strict_minimum else 'non-negative'} {kind}" if integer else \
            f"a finite {'positive' if strict_minimum else 'non-negative'} {kind}"
    elif maximum is None and minimum == 1 and integer and not strict_minimum:
        text = "a positive integer"
    elif minimum is None and maximum is None:
        text = f"an {kind}" if integer else "a finite number"
    elif maximum is None:
        text = f"a{'n' if integer else ''} {kind} {'>' if strict_minimum else '≥'} {_fmt(minimum)}"
    elif minimum is None:
        text = f"a{'n' if integer else ''} {kind} {'<' if strict_maximum else '≤'} {_fmt(maximum)}"
    else:
        lo = "(" if strict_minimum else "["
        hi = ")" if strict_maximum else "]"
        low = "-inf" if minimum is None else _fmt(minimum)
        text = f"a{'n' if integer else ''} {kind} in {lo}{low}, {_fmt(maximum)}{hi}"
    return f"{text} {unit}".rstrip() if unit else text


def check_number(
    value,
    field: str | None,
    *,
    integer: bool = False,
    minimum: float | None = None,
    strict_minimum: bool = False,
    maximum: float | None = None,
    strict_maximum: bool = False,
    unit: str = "",
    allow_none: bool = False,
    what: str = "",
    source: str | None = None,
    whole_float: bool = False,
    also: str = "",
    hint: str = "",
):
    """`value` if it is a (finite) number within the bounds, else InputError.

    `unit` ends the description ("of seconds", "number of tokens"); `what` starts the message
    ("the horizon"); `allow_none` lets None through (an optional setting left out); `also` names
    other values the field takes ("or 'auto'"), `hint` is appended after the bad value
    ("; fix or delete the row"); `whole_float` (with `integer`) returns 7.0 as int 7."""
    if value is None and allow_none:
        return None
    if whole_float and integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok_type = Integral if integer else Real
    if isinstance(value, bool) or not isinstance(value, ok_type):
        if integer and isinstance(value, float) and value.is_integer():
            _fail(value, field, integer, minimum, strict_minimum, maximum, strict_maximum, unit, allow_none, what,
                  source, also, " (write it without a decimal point)" + hint)
        _fail(value, field, integer, minimum, strict_minimum, maximum, strict_maximum, unit, allow_none, what, source, also, hint)
    if (
        (not integer and not math.isfinite(value))
        or (minimum is not None and (value < minimum or (strict_minimum and value == minimum)))
        or (maximum is not None and (value > maximum or (strict_maximum and value == maximum)))
    ):
        _fail(value, field, integer, minimum, strict_minimum, maximum, strict_maximum, unit, allow_none, what, source, also, hint)
    return value


def _fail(value, field, integer, minimum, strict_minimum, maximum, strict_maximum, unit, allow_none, what, source, also, hint):
    need = _describe(integer, minimum, strict_minimum, maximum, strict_maximum, unit)
    prefix = f"{what} must be" if what else "must be"
    alternatives = "".join(f" {a}" for a in (also, "or null" if allow_none else "") if a)
    raise InputError(f"{prefix} {need}{alternatives}, got {value!r:.60}{hint}", field=field, source=source)
