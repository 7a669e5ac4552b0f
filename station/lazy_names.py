"""A package that re-exports its modules' names and loads each module only when one of its names is first used.

``__getattr__ = lazy_names(__name__, {"Name": "module", ...})`` in a package's ``__init__`` (PEP 562), with the
same names imported under ``TYPE_CHECKING`` for the type checker.  Used where a unit's worker process imports a
package for a few of its names and must not pay for (or, forked from the fork server, copy) the rest.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, homes: Mapping[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package``: each name of ``homes`` from ``package.<its module>``."""

    def __getattr__(name: str) -> Any:  # noqa: N807 - the module hook's own name
        if name not in homes:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{homes[name]}"), name)

    return __getattr__
