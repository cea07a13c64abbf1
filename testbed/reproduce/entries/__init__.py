"""The built-in reproductions, one file each; importing this package registers them in this order."""
# ruff: noqa: I001  (the import order is the registration order)

from testbed.reproduce.entries import saxe as _saxe  # noqa: F401
from testbed.reproduce.entries import extrapolation as _extrapolation  # noqa: F401
from testbed.reproduce.entries import spectral as _spectral  # noqa: F401
from testbed.reproduce.entries import superposition as _superposition  # noqa: F401
from testbed.reproduce.entries import in_context as _in_context  # noqa: F401
from testbed.reproduce.entries import routing as _routing  # noqa: F401
from testbed.reproduce.entries import myopia as _myopia  # noqa: F401
from testbed.reproduce.entries import grokking as _grokking  # noqa: F401
from testbed.reproduce.entries import health as _health  # noqa: F401
