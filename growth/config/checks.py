"""Value checks a schema field carries with it, so validation walks the schemas instead of a
list of keys: ``density: float = key(0.1, in_range(0, 1, lo_open=True, valid="a density in (0, 1]"))``.

A leaf: imports nothing of the framework but the registry (for choices named by a registry).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

CHECKS = "checks"  # the field-metadata key


@dataclass(frozen=True)
class Check:
    """`test(value)` is True for a valid value; `valid` says in words what is valid."""

    valid: str
    test: Callable[[Any], bool]
    # For choices: what the bad-input matrix can offer as a value that is not one of them.
    choices: Callable[[], Sequence[Any]] | None = None

    def problem(self, key: str, value: Any) -> str | None:
        try:
            ok = bool(self.test(value))
        except (TypeError, ValueError):
            ok = False
        return None if ok else f"{key}={value!r} is invalid: {self.valid}"


def key(default: Any = dataclasses.MISSING, *checks: Check, factory: Callable[[], Any] | None = None) -> Any:
    """A dataclass field with checks: `key(0.1, positive())`, `key(factory=list, min_len(1))`."""
    meta = {CHECKS: tuple(checks)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def field_checks(f: dataclasses.Field) -> tuple[Check, ...]:
    return tuple(f.metadata.get(CHECKS, ()))


def in_range(
    lo: float | None = None, hi: float | None = None, *, lo_open: bool = False, hi_open: bool = False,
    nullable: bool = False, valid: str | None = None,
) -> Check:
    """lo <= x <= hi (open ends with lo_open/hi_open); NaN and +-inf are never in range (no key
    means "forever" by infinity: every number is used in arithmetic that overflows on it); None
    only if nullable."""

    def test(x: Any) -> bool:
        if x is None:
            return nullable
        if not isinstance(x, (int, float)) or isinstance(x, bool) or not math.isfinite(x):
            return False
        if lo is not None and (x <= lo if lo_open else x < lo):
            return False
        if hi is not None and (x >= hi if hi_open else x > hi):
            return False
        return True

    if valid is None:
        left = "(" if lo_open else "["
        right = ")" if hi_open else "]"
        span = f"in {left}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{right}"
        valid = ("null or " if nullable else "") + span
    return Check(valid, test)


def at_least(lo: float, valid: str | None = None, nullable: bool = False) -> Check:
    return in_range(lo, None, nullable=nullable, valid=valid or (("null or " if nullable else "") + f"at least {lo}"))


def above(lo: float, valid: str | None = None, nullable: bool = False) -> Check:
    return in_range(lo, None, lo_open=True, nullable=nullable, valid=valid or (("null or " if nullable else "") + f"above {lo}"))


def density(nullable: bool = False, valid: str | None = None) -> Check:
    return in_range(0, 1, lo_open=True, nullable=nullable, valid=valid or "a density in (0, 1]")


def fraction(lo_open: bool = True, hi_open: bool = True, what: str = "a fraction") -> Check:
    left, right = "(" if lo_open else "[", ")" if hi_open else "]"
    return in_range(0, 1, lo_open=lo_open, hi_open=hi_open, valid=f"{what} in {left}0, 1{right}")


def one_of(*values: Any, valid: str | None = None) -> Check:
    return Check(valid or f"one of {list(values)}", lambda x: x in values, choices=lambda: values)


def registered(kind: str, valid: str | None = None) -> Check:
    """The value names an entry of the registry of `kind` (its plugins imported first)."""

    def names() -> list[str]:
        from growth.registry import REGISTRIES

        return REGISTRIES[kind].names()

    return _Registered(valid or "", lambda x: x in names(), choices=names)


class _Registered(Check):
    def problem(self, key: str, value: Any) -> str | None:
        names = list(self.choices())
        if value in names:
            return None
        return f"{key}={value!r} is invalid: {self.valid or f'one of {names}'}"


def each(inner: Check, valid: str | None = None, lengths: Sequence[int] | None = None, min_len: int = 0) -> Check:
    """A list whose every item passes `inner` (and whose length is one of `lengths`, or >= min_len)."""

    def test(xs: Any) -> bool:
        if xs is None or isinstance(xs, (str, bytes)):
            return False
        xs = list(xs)
        if lengths is not None and len(xs) not in lengths:
            return False
        return len(xs) >= min_len and all(inner.test(x) for x in xs)

    return Check(valid or f"a list of values {inner.valid}", test)


def nonempty(valid: str = "a non-empty value") -> Check:
    return Check(valid, lambda x: x is not None and x != "" and x != [])


def name_or_null(valid: str = "null or a non-empty name") -> Check:
    """An optional name or path: null, or a string that is not empty (an empty one would name the
    working directory, or nothing, without saying so)."""
    return Check(valid, lambda x: x is None or (isinstance(x, str) and x.strip() != ""))


# Seeds go to torch.manual_seed and numpy's generators, which take 64 and 32 bits: the range both take.
SEED_MAX = 2**32 - 1


def seed_value(valid: str = f"a seed in [0, {SEED_MAX}]") -> Check:
    return in_range(0, SEED_MAX, valid=valid)


def satisfies(test: Callable[[Any], bool], valid: str) -> Check:
    return Check(valid, test)


__all__ = [
    "Check", "key", "field_checks", "in_range", "at_least", "above", "density", "fraction", "one_of",
    "registered", "each", "nonempty", "name_or_null", "seed_value", "SEED_MAX", "satisfies",
]
