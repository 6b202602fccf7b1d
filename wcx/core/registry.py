"""Name -> object registries for the parts of wcx that others may extend.

Scores (``wcx.scores``), policies (``wcx.policies``), calibration targets (``wcx.targets``) and
backends (``wcx.backends``) are each one :class:`Registry`. wcx registers its own entries when
the module that defines them is imported; another package adds its own in one of two ways:

* in code: ``wcx.core.scores.register_score(MyScore())`` (or ``register_policy``,
  ``register_target``, ``wcx.runtime.backends.register_backend``);
* by a Python entry point in its packaging metadata, so that every process finds it (the
  ``wcx`` command line included) without importing anything by hand::

      [project.entry-points."wcx.scores"]
      margin = "my_package.scores:MarginScore"

  The object an entry point names is registered under its own ``name`` (an instance, or a class
  that is instantiated without arguments). Entry points are read once, on the first lookup of a
  name the registry does not know, or when :meth:`Registry.names` lists every entry.

A name can be registered once; registering it again is an error unless ``replace=True``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Generic, TypeVar

from wcx.errors import BadInputError

log = logging.getLogger(__name__)

T = TypeVar("T")


class Registry(Generic[T]):
    """Entries of one kind by name, plus the entry points of ``group``."""

    def __init__(self, kind: str, group: str, name_of: Callable[[T], str], *, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or f"{kind}s"
        self.group = group
        self._name_of = name_of
        self._entries: dict[str, T] = {}
        self._entry_points_read = False

    def register(self, entry: T, *, replace: bool = False) -> T:
        """Add ``entry`` under its name; returns it (so it can decorate a class instance)."""
        name = self._name_of(entry)
        if not isinstance(name, str) or not name:
            raise ValueError(f"a {self.kind} needs a non-empty string name, got {name!r}")
        if name in self._entries and not replace and self._entries[name] is not entry:
            raise ValueError(f"a {self.kind} named {name!r} is already registered (pass replace=True)")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests use this to clean up)."""
        self._entries.pop(name, None)

    def get(self, name: str) -> T:
        """The entry called ``name``; ``BadInputError`` listing the valid names if none."""
        if name not in self._entries:
            self.load_entry_points()
        try:
            return self._entries[name]
        except KeyError:
            valid = ", ".join(self.names())
            raise BadInputError(f"unknown {self.kind} {name!r}; valid {self.plural}: {valid}") from None

    def __contains__(self, name: object) -> bool:
        if name not in self._entries:
            self.load_entry_points()
        return name in self._entries

    def names(self) -> list[str]:
        """Every registered name, entry points included, in registration order."""
        self.load_entry_points()
        return list(self._entries)

    def __iter__(self) -> Iterator[T]:
        return iter([self._entries[n] for n in self.names()])

    def load_entry_points(self, *, force: bool = False) -> None:
        """Register the entries that installed packages declare under ``group`` (once)."""
        if self._entry_points_read and not force:
            return
        self._entry_points_read = True
        for ep in metadata.entry_points(group=self.group):
            try:
                obj = ep.load()
                entry = obj() if isinstance(obj, type) else obj
                if self._name_of(entry) not in self._entries:
                    self.register(entry)
            except Exception as exc:  # a broken plugin must not break wcx: say so and go on
                log.warning("cannot load %s %r from entry point %s (%s: %s)", self.kind, ep.name, ep.value,
                            type(exc).__name__, exc)
