"""Registries: one per kind of plugin (method, growth score, seed builder, stop rule, dataset,
model, logger, study executor).

An entry is registered in the module that defines it, with its name, its schema dataclass (the
settings of its config section, a subclass of the section's base schema) and its own validator.
Choices, value checks and Hydra's config store are derived from the registries, and plugins are
found by importing the packages a registry names, so adding one is adding one file.

This module is a leaf: it imports nothing of the framework but its errors.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from growth.errors import ConfigError

# A validator gets the whole composed config and returns problems, each one line naming the key.
Validator = Callable[[Any], "list[str]"]


@dataclass(frozen=True)
class Entry:
    kind: str
    name: str
    obj: Any
    schema: type | None = None
    validate: Validator | None = None
    # Anything else the entry says of itself (a method's family and display label, ...).
    info: dict = field(default_factory=dict)


class Registry:
    """Named entries of one kind.

    key: the config key whose value names an entry (``method.name``, ``growth.stop.rule``).
    group: the Hydra config group whose options use the entries' schemas (``method``), if any;
        every entry's schema is stored there as ``<name>_schema``.
    packages: modules or packages imported (every module of a package) to find the entries.
    """

    def __init__(self, kind: str, key: str, group: str | None = None, packages: Sequence[str] = ()):
        self.kind, self.key, self.group = kind, key, group
        self.packages = list(packages)
        self._entries: dict[str, Entry] = {}
        self._loaded_with: tuple[str, ...] | None = None  # the plugin packages of the last load
        REGISTRIES[kind] = self

    def register(self, name: str, *, schema: type | None = None, validate: Validator | None = None, **info: Any):
        """Decorator: register the decorated class or function under `name`."""

        def decorate(obj: Any) -> Any:
            self.add(name, obj, schema=schema, validate=validate, **info)
            return obj

        return decorate

    def add(self, name: str, obj: Any, *, schema: type | None = None, validate: Validator | None = None, **info: Any) -> Entry:
        old = self._entries.get(name)
        if old is not None and old.obj is not obj:
            raise ValueError(f"{self.kind} {name!r} is registered twice ({_where(old.obj)} and {_where(obj)})")
        entry = Entry(self.kind, name, obj, schema, validate, dict(info))
        self._entries[name] = entry
        return entry

    def remove(self, name: str) -> None:
        self._entries.pop(name, None)

    def load(self) -> "Registry":
        """Import the packages that hold this kind's entries (once; new modules are found later too)."""
        extra = tuple(extra_plugin_packages())
        for package in [*self.packages, *extra]:
            for module in plugin_modules(package):
                importlib.import_module(module)
        self._loaded_with = extra
        return self

    def _ensure(self) -> None:
        if self._loaded_with != tuple(extra_plugin_packages()):  # first use, or GROWTH_PLUGINS changed
            self.load()

    def names(self) -> list[str]:
        self._ensure()
        return sorted(self._entries)

    def entries(self) -> list[Entry]:
        self._ensure()
        return [self._entries[n] for n in sorted(self._entries)]

    def __contains__(self, name: object) -> bool:
        self._ensure()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def entry(self, name: str) -> Entry:
        self._ensure()
        if name not in self._entries:
            self.load()  # a plugin module added since the last look
        try:
            return self._entries[name]
        except KeyError:
            raise ConfigError(f"{self.key}={name!r} is unknown: valid are {self.names()}") from None

    def get(self, name: str) -> Any:
        return self.entry(name).obj


REGISTRIES: dict[str, Registry] = {}
# Packages of one's own plugins outside this repository (importable, comma-separated), imported
# whenever a registry looks for its entries: GROWTH_PLUGINS=mylab.methods,mylab.models
PLUGINS_ENV = "GROWTH_PLUGINS"


def extra_plugin_packages() -> list[str]:
    import os

    return [p.strip() for p in os.environ.get(PLUGINS_ENV, "").split(",") if p.strip()]


def plugin_modules(package: str) -> list[str]:
    """`package` and, when it is a package, every module in it (names starting with _ left out)."""
    mod = importlib.import_module(package)
    path = getattr(mod, "__path__", None)
    if path is None:
        return [package]
    found = [package]
    for info in pkgutil.iter_modules(path):
        if info.name.startswith("_"):
            continue
        found += plugin_modules(f"{package}.{info.name}") if info.ispkg else [f"{package}.{info.name}"]
    return found


def load_all() -> dict[str, Registry]:
    for registry in list(REGISTRIES.values()):
        registry.load()
    return REGISTRIES


def _where(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', obj)}"
