"""Errors a person can act on.

Every error raised for bad user input is a subclass of `TestbedError` and says
where the problem is (file, field or flag), what the offending value was, and
what would have been accepted.
"""

from __future__ import annotations


def is_count(v: object, low: int = 1) -> bool:
    """Whether ``v`` is a whole number (not a bool) of at least ``low``: the check behind every
    "expected an integer >= ..." message."""
    return isinstance(v, int) and not isinstance(v, bool) and v >= low


class TestbedError(Exception):
    """Base class for errors caused by user input (specs, configs, flags)."""

    __test__ = False  # not a pytest test class, despite the name


class SpecError(TestbedError, ValueError):
    """A task spec (TOML file or expression) is invalid.

    Args:
        message: what is wrong and what is accepted.
        file: the spec file, when known.
        field: dotted path of the field inside the spec (e.g. ``pieces[1].f``).
        text: the offending text or value.
    """

    def __init__(self, message: str, *, file: str | None = None, field: str | None = None,
                 text: str | None = None):
        self.message = message
        self.file = file
        self.field = field
        self.text = text
        super().__init__(self._render())

    def _render(self) -> str:
        where = []
        if self.file:
            where.append(str(self.file))
        if self.field:
            where.append(f"field '{self.field}'")
        head = ": ".join(where)
        body = self.message
        if self.text is not None:
            shown = self.text if len(self.text) <= 120 else self.text[:117] + "..."
            body = f"{body} (got {shown!r})"
        return f"{head}: {body}" if head else body

    def located(self, *, file: str | None = None, field: str | None = None) -> SpecError:
        """Return a copy with the file and/or an outer field prefix filled in."""
        new_field = self.field
        if field:
            new_field = f"{field}.{self.field}" if self.field else field
        return SpecError(self.message, file=file or self.file, field=new_field, text=self.text)


class ConfigError(TestbedError, ValueError):
    """A training, suite or command-line configuration is invalid."""


class UnknownNameError(ConfigError, KeyError):
    """A task, method, model or optimizer name is not registered."""

    def __init__(self, kind: str, name: str, known: list[str]):
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(sorted(known))}")

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return self.args[0]


def call_factory(kind: str, name: str, factory, kwargs: dict, returns: type):
    """Call a registered factory, turning bad keyword arguments into a ConfigError and
    refusing a result of the wrong type (shared by the task and method registries)."""
    try:
        out = factory(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{kind} {name!r}: bad arguments {sorted(kwargs)} ({e}); accepted: "
                          f"{_accepted(factory)}") from None
    if not isinstance(out, returns):
        raise ConfigError(f"{kind} factory {name!r} returned {type(out).__name__}, not a {returns.__name__}")
    return out


def _accepted(factory) -> str:
    """The keyword arguments a factory (function or dataclass) accepts, for messages."""
    import inspect

    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return "see its docstring"
    names = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return ", ".join(names) or "none"
