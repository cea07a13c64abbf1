"""Training methods. Importing this package registers the built-in ones."""

from testbed.methods import ce, mse, myopic, routing  # noqa: F401  (registration)
from testbed.methods.base import (
    Ctx,
    Extras,
    Method,
    Profile,
    list_methods,
    make_method,
    register_method,
)

__all__ = ["Ctx", "Extras", "Method", "Profile", "list_methods", "make_method", "register_method"]
