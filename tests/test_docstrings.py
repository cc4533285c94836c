"""The docstring gate: every public name a package exports is documented, with its parameters.

ruff's ``D`` rules (numpy convention) check that docstrings exist and are laid out as numpydoc;
they cannot check that a docstring names the parameters it documents. This test does, for each
function and class named in an ``__all__`` of the packages below: a parameter that the docstring
never mentions by name is either undocumented or was renamed without its docstring.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
from collections.abc import Iterator
from dataclasses import dataclass
from enum import Enum
from types import ModuleType

import pytest

# Packages whose ``__all__`` is the public surface, and packages in which every module that
# declares an ``__all__`` is checked too (experiments and serving export per module).
PACKAGES = ("bandits", "arms", "arms.data", "envs", "serving.store")
PER_MODULE = ("experiments", "serving")
OURS = frozenset(name.partition(".")[0] for name in (*PACKAGES, *PER_MODULE))

# Parameters a docstring need not name: the receiver, and catch-alls passed through.
EXEMPT_KINDS = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
EXEMPT_NAMES = frozenset({"self", "cls"})


def _modules() -> Iterator[ModuleType]:
    seen: set[str] = set()
    for name in PACKAGES:
        seen.add(name)
        yield importlib.import_module(name)
    for package_name in PER_MODULE:
        package = importlib.import_module(package_name)
        for info in pkgutil.walk_packages(package.__path__, prefix=f"{package_name}."):
            if info.name in seen:
                continue
            seen.add(info.name)
            module = importlib.import_module(info.name)
            if hasattr(module, "__all__"):
                yield module


def _exported() -> list[tuple[str, object]]:
    """Every function and class in an ``__all__`` above, as ``("module.name", object)``."""
    # Keyed by identity: a name re-exported by a package is checked once, under its first export.
    found: dict[int, tuple[str, object]] = {}
    for module in _modules():
        for name in module.__all__:
            obj = getattr(module, name)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                found.setdefault(id(obj), (f"{module.__name__}.{name}", obj))
    return sorted(found.values(), key=lambda item: item[0])


EXPORTED = _exported()


def _parameters(obj: object) -> list[str]:
    """Names a caller passes to ``obj`` (a class: its constructor), less catch-alls and privates."""
    if inspect.isclass(obj):
        if issubclass(obj, Enum):  # members, not constructor arguments
            return []
        # A constructor inherited from a library (FastAPI, Exception) is documented there.
        owner = next(c for c in obj.__mro__ if "__init__" in vars(c))
        if owner is not obj and owner.__module__.partition(".")[0] not in OURS:
            return []
    try:
        signature = inspect.signature(obj)  # type: ignore[arg-type]
    except (TypeError, ValueError):  # a builtin-backed class without a signature
        return []
    return [
        p.name
        for p in signature.parameters.values()
        if p.kind not in EXEMPT_KINDS and p.name not in EXEMPT_NAMES and not p.name.startswith("_")
    ]


def _docstring(obj: object) -> str:
    """The docstring of ``obj``; a class's with its ``__init__``'s (numpydoc allows either)."""
    parts = [inspect.getdoc(obj) or ""]
    if inspect.isclass(obj) and "__init__" in vars(obj):
        parts.append(inspect.getdoc(vars(obj)["__init__"]) or "")
    return "\n".join(parts)


def test_the_packages_export_something() -> None:
    # A walk that found nothing would pass every test below vacuously.
    assert len(EXPORTED) > 50
    names = {name for name, _ in EXPORTED}
    for package in (*PACKAGES, *PER_MODULE):
        assert any(n.startswith(f"{package}.") for n in names), package


def _has_docstring(obj: object) -> bool:
    own = (obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)) or ""
    # A dataclass without a docstring gets its signature as one: that documents nothing.
    generated = inspect.isclass(obj) and own.startswith(f"{obj.__name__}(")
    return bool(own.strip()) and not generated


def _unmentioned(obj: object) -> list[str]:
    """The parameters of ``obj`` its docstring never names (as a whole word)."""
    text = _docstring(obj)
    return [p for p in _parameters(obj) if not re.search(rf"\b{re.escape(p)}\b", text)]


@pytest.mark.parametrize(("name", "obj"), EXPORTED, ids=[name for name, _ in EXPORTED])
def test_exported_name_has_a_docstring_naming_its_parameters(name: str, obj: object) -> None:
    assert _has_docstring(obj), f"{name} has no docstring"
    missing = _unmentioned(obj)
    assert not missing, f"{name}'s docstring never mentions its parameter(s) {missing}"


def test_the_check_finds_what_is_missing() -> None:
    # The checker itself, on names made to fail it: a broken check would pass the tree silently.
    def documented(alpha: int, *args: int, beta: int = 0, **kwargs: int) -> None:
        """Use ``alpha`` and ``beta``."""

    def half(alpha: int, alphabet: int) -> None:
        """Use ``alphabet`` (a longer name that contains the other is no mention of it)."""

    def bare(alpha: int) -> None:
        pass

    @dataclass
    class Plain:
        gamma: int

    @dataclass
    class Told:
        """Holds ``gamma``."""

        gamma: int
        _cache: int = 0

    @dataclass
    class Untold:
        """Holds a number."""

        gamma: int

    class BadValueError(ValueError):
        """Raised on a bad value (the constructor is the library's)."""

    assert _unmentioned(documented) == []
    assert _unmentioned(half) == ["alpha"]
    assert not _has_docstring(bare) and not _has_docstring(Plain)
    assert _has_docstring(Told) and _unmentioned(Told) == []
    assert _unmentioned(Untold) == ["gamma"]
    assert _unmentioned(BadValueError) == []
