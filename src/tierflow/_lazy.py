"""Packages whose public names are imported on first use (Note [Lazy public names]).

A package calls :func:`lazy_names` with ``{public name: defining module}``; a name then
resolves on first access, once. Where a public name is also a submodule's name
(``tierflow.graph.capture`` the function and ``tierflow/graph/capture.py``), the name
stays the public object, as it was when packages imported everything eagerly: importing
the submodule later does not rebind it.
"""

from __future__ import annotations

import importlib
import sys
import types
from collections.abc import Mapping
from typing import Any


class _LazyPackage(types.ModuleType):
    _lazy_names: Mapping[str, str]

    def __getattr__(self, name: str) -> Any:  # only when the name is not bound yet
        module = self.__dict__.get("_lazy_names", {}).get(name)
        if module is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        super().__setattr__(name, value)  # resolved once
        return value

    def __setattr__(self, name: str, value: Any) -> None:
        # The import system binds every newly imported submodule on its package; a public
        # name of the same spelling keeps its object (resolved on first access).
        lazy = self.__dict__.get("_lazy_names", {})
        shadows = name in lazy and getattr(value, "__name__", None) == f"{self.__name__}.{name}"
        if isinstance(value, types.ModuleType) and shadows:
            return
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy_names", {})))


def lazy_names(package: str, names: Mapping[str, str]) -> None:
    """Make ``names`` (``{public name: module defining it}``) of ``package`` lazy."""
    module = sys.modules[package]
    module.__class__ = _LazyPackage
    module.__dict__["_lazy_names"] = dict(names)
