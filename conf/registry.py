"""Named extension points: a new dataset, strategy, device backend or proxy is one :class:`Registry` entry.

A registry maps names to entries (a :class:`collections.abc.Mapping`); looking up a name it does not hold
raises one :class:`~conf.errors.UserError` naming the setting that chose it and the names it holds. It is the
one home of that check for every extension point.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Generic, TypeVar

from conf.errors import UserError

T = TypeVar("T")


class Registry(Mapping[str, T], Generic[T]):
    """Entries of one kind, by name; ``field`` is the setting that selects one (``data.name``)."""

    def __init__(self, field: str, kind: str, error: type[UserError] = UserError) -> None:
        self.field, self.kind, self.error = field, kind, error  # error: the UserError subclass an unknown name raises
        self._entries: dict[str, T] = {}

    def register(self, name: str, entry: T) -> T:
        """Add ``entry`` under ``name`` (a name is registered once); returns the entry."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"{self.kind} registry: a name must be a non-empty string, not {name!r}")
        if name in self._entries:
            raise ValueError(f"{self.kind} registry: {name!r} is already registered")
        self._entries[name] = entry
        return entry

    def get_or_fail(self, name: object) -> T:
        """The entry of ``name``, or a one-line error naming the setting and the registered names."""
        if not isinstance(name, str) or name not in self._entries:
            raise self.error(f"{self.field}: {name!r} is not a {self.kind}; choose one of {', '.join(self._entries)}")
        return self._entries[name]

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.field}: {', '.join(self._entries)})"
