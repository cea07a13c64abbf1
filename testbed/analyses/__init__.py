"""Analyses of what trained: each a registered `Analysis` record with its tables, comparison
rows and figures together (one subpackage each). Importing this package registers the
built-in ones, in this order (the order of the comparison and the report; the headline
analysis first). No JAX here: an analysis's ``measure`` imports what it needs when a suite
runs it.
"""
# ruff: noqa: I001  (the import order is the registration order)

from testbed.analyses.ood import analysis as _ood  # noqa: F401
from testbed.analyses.plateaus import analysis as _plateaus  # noqa: F401
from testbed.analyses.probes import analysis as _probes  # noqa: F401
from testbed.analyses.routing import analysis as _routing  # noqa: F401
from testbed.analyses.myopia import analysis as _myopia  # noqa: F401
from testbed.analyses.attribution import analysis as _attribution  # noqa: F401
from testbed.analyses.icl import analysis as _icl  # noqa: F401
from testbed.analyses.steering import analysis as _steering  # noqa: F401
from testbed.analyses.capacity import analysis as _capacity  # noqa: F401
from testbed.analyses.base import Analysis, Figure, list_analyses, make_analysis, register_analysis

__all__ = ["Analysis", "Figure", "list_analyses", "make_analysis", "register_analysis"]
