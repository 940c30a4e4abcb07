"""Name -> piece registries, so that a TOML preset can pick any piece by name."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from forwardforward.errors import ConfigError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """A read-only mapping from names to pieces whose lookup error lists the accepted names.

    >>> r = Registry("loss", {"a": 1})
    >>> r["a"]
    1
    """

    def __init__(self, kind: str, items: Mapping[str, T]) -> None:
        self.kind = kind
        self._items = dict(items)

    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            choices = ", ".join(sorted(self._items))
            raise ConfigError(f"unknown {self.kind} {name!r}; choose one of: {choices}") from None

    def add(self, name: str, item: T) -> None:
        """Register ``item`` under ``name`` (the one open registry: layer kinds). Registering
        the same item again is harmless; another item under a taken name is an error."""
        if name in self._items and self._items[name] is not item:
            raise ValueError(f"a {self.kind} named {name!r} is already registered")
        self._items[name] = item

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str, default: T | None = None) -> T | None:  # type: ignore[override]
        return self._items.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
