"""Named things that plugins register (strategies, models, losses, ...).

Each registry remembers which plugin registered each name, so a clash names
both plugins and ``ftkit strategies`` can say where a strategy comes from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

from ftkit.errors import PluginError, unknown

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    name: str
    value: T
    plugin: str


@dataclass(frozen=True)
class Fallback(Generic[T]):
    """Names a library knows beyond the registered ones (timm's optimizers).

    Asked only for a name no plugin registered, so the library is imported
    only when such a name is used (or misspelled)."""

    plugin: str
    get: Callable[[str], T | None]
    names: Callable[[], Iterable[str]]


class Registry(Generic[T]):
    def __init__(self, kind: str, fallback: Fallback[T] | None = None) -> None:
        self.kind = kind
        self.fallback = fallback
        self._entries: dict[str, Entry[T]] = {}

    def add(self, name: str, value: T, plugin: str) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin '{plugin}' registered a {self.kind} without a name")
        if name in self._entries:
            first = self._entries[name].plugin
            raise PluginError(
                f"{self.kind} '{name}' is registered twice: by plugin '{first}' "
                f"and by plugin '{plugin}'"
            )
        self._entries[name] = Entry(name, value, plugin)

    def get(self, name: str) -> T:
        return self.entry(name).value

    def entry(self, name: str) -> Entry[T]:
        if name in self._entries:
            return self._entries[name]
        if self.fallback is not None:
            value = self.fallback.get(name)
            if value is not None:
                return Entry(name, value, self.fallback.plugin)
        known = [*self._entries, *(self.fallback.names() if self.fallback else ())]
        raise unknown(self.kind, name, dict.fromkeys(known))

    def __contains__(self, name: object) -> bool:
        if name in self._entries:
            return True
        return isinstance(name, str) and self.fallback is not None and bool(self.fallback.get(name))

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(self._entries.values())

    def names(self) -> list[str]:
        """The registered names (a fallback's are not listed)."""
        return list(self._entries)
