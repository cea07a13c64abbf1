"""A registry: a dict, a `register` that refuses duplicates, a `make` that validates.

The shape of gymnax's registration, shared by methods, models and analyses (tasks keep
their own registry, which also finds TOML specs on disk). ``make`` caches by name and
keyword arguments, so the same request gives the same object and a compiled program
that closes over it is reused.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Generic, TypeVar

from testbed.core.errors import ConfigError, UnknownNameError, call_factory

T = TypeVar("T")
_MAKING = threading.RLock()  # one for every registry (a factory may make from another): two threads
# asking for the same object get the same one (compiled programs are found by identity)


class Registry(Generic[T]):
    """Factories ``(**kwargs) -> T`` by name.

    Args:
        kind: what is registered, for messages ("method", "model", ...).
        returns: the type every factory must return.
    """

    def __init__(self, kind: str, returns: type):
        self.kind, self.returns = kind, returns
        self._factories: dict[str, Callable[..., T]] = {}
        self._where: dict[str, str] = {}
        self._cache: dict[tuple, T] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator: register a factory under ``name``; refuses a name already taken."""
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"register_{self.kind}: expected a name made of letters, digits and '_', got {name!r}")

        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ConfigError(f"{self.kind} {name!r} is already registered (by {self._where[name]})")
            self._factories[name] = factory
            code = getattr(factory, "__code__", None)
            self._where[name] = f"{code.co_filename}:{code.co_firstlineno}" if code else repr(factory)
            return factory
        return deco

    def factory(self, name: str) -> Callable[..., T] | None:
        """The factory registered under ``name``, or None."""
        return self._factories.get(name)

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._factories)

    def ordered(self) -> list[str]:
        """Registered names in registration order (built-ins first, then plug-ins)."""
        return list(self._factories)

    def __contains__(self, name: object) -> bool:
        return name in self._factories

    def make(self, name: str, **kwargs: Any) -> T:
        """Build by name; the same name and keywords give the same object.

        Raises:
            UnknownNameError: the name is not registered. ConfigError: bad keywords or result.
        """
        if not isinstance(name, str):
            raise ConfigError(f"{self.kind}: expected a registered name (a string), got {type(name).__name__} "
                              f"{name!r}; options go as keywords, e.g. make_{self.kind}('name', option=value); "
                              f"known {self.kind}s: {', '.join(self.names())}")
        if name not in self._factories:
            raise UnknownNameError(self.kind, name, self.names())
        key = (name, freeze(kwargs))
        try:
            hash(key)
        except TypeError:  # built each time, it would compile its programs each time
            raise ConfigError(f"{self.kind} {name!r}: option values must be numbers, strings, booleans or lists "
                              f"and tables of them, got {kwargs!r}") from None
        with _MAKING:
            if key not in self._cache:
                self._cache[key] = call_factory(self.kind, name, self._factories[name], kwargs, self.returns)
            return self._cache[key]


def freeze(v: Any, top: bool = True) -> Any:
    """A hashable form of keyword arguments. Top-level keyword order never matters;
    nested mappings keep their order, which may be meaningful (routing's ``blocks``)."""
    if isinstance(v, Mapping):
        items = [(k, freeze(x, False)) for k, x in v.items()]
        return ("<map>", *(sorted(items) if top else items))
    if isinstance(v, list | tuple):
        return tuple(freeze(x, False) for x in v)
    return v
