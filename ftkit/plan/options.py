"""Typed strategy options: declared once, parsed from ``-o KEY=VALUE`` or TOML,
validated, and shown by ``ftkit strategies`` with their defaults and help."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ftkit.errors import UsageError, did_you_mean

Check = Callable[[Any], "str | None"]


def positive(value: Any) -> str | None:
    return None if value > 0 else "must be > 0"


def non_negative(value: Any) -> str | None:
    return None if value >= 0 else "must be >= 0"


def fraction(value: Any) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1]"


@dataclass(frozen=True)
class Option:
    """One typed option. The run's (``Config``'s fields, named by their
    ``flag`` in errors) and each strategy's (``-o KEY=VALUE``) are parsed and
    checked by this one ``parse``."""

    name: str
    type: type
    default: Any
    help: str
    check: Check | None = None
    choices: tuple[str, ...] | None = None
    flag: str | None = None  # a run option's flag (--lr): errors name it
    convert: Callable[[Any], Any] | None = None  # a parser of its own; ValueError on bad input

    def parse(self, raw: Any, where: str) -> Any:
        """Turn a string (CLI, environment) or TOML value into this option's type, checked."""
        label = f"{self.flag}:" if self.flag else f"{where}: option '{self.name}'"
        if self.convert is not None:
            try:
                return self.convert(raw)
            except ValueError as exc:
                raise UsageError(f"{label} {exc}") from None
        value = _convert(raw, self.type)
        if value is None:
            raise UsageError(f"{label} expected {self.type.__name__}, got {raw!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UsageError(f"{label} must be a finite number, got {raw!r}")
        if self.choices and value not in self.choices:
            raise UsageError(
                f"{label} must be one of {', '.join(self.choices)}, "
                f"got {raw!r}{did_you_mean(str(value), self.choices)}"
            )
        problem = self.check(value) if self.check else None
        if problem:
            raise UsageError(f"{label} {problem}, got {raw!r}")
        return value

    def describe(self) -> dict[str, Any]:
        out = {
            "name": self.name,
            "type": self.type.__name__,
            "default": self.default,
            "help": self.help,
        }
        if self.choices:
            out["choices"] = list(self.choices)
        return out


def _convert(raw: Any, kind: type) -> Any:
    if kind is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        return {
            "true": True,
            "1": True,
            "yes": True,
            "on": True,
            "false": False,
            "0": False,
            "no": False,
            "off": False,
        }.get(text)
    if kind is str:
        return raw if isinstance(raw, str) else None
    if isinstance(raw, bool):
        return None
    try:
        if kind is int:
            return int(raw) if isinstance(raw, int) else int(str(raw).strip())
        return kind(raw)
    except (TypeError, ValueError):
        return None


def resolve_options(
    options: Iterable[Option], given: Mapping[str, Any], where: str
) -> dict[str, Any]:
    """Defaults overridden by ``given``; an unknown key suggests the closest."""
    declared = {o.name: o for o in options}
    for key in given:
        if key not in declared:
            raise UsageError(
                f"{where}: unknown option '{key}'{did_you_mean(key, declared)}; "
                f"valid: {', '.join(sorted(declared))}"
            )
    return {
        name: (opt.parse(given[name], where) if name in given else opt.default)
        for name, opt in declared.items()
    }


def parse_assignments(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``, as given by ``-o``."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"-o/--set expects KEY=VALUE, got {pair!r}")
        out[key.strip().replace("-", "_")] = value.strip()
    return out
