"""The ground floor: errors, statistics, provenance, registries and plug-ins.

Nothing here imports JAX at import time, nor any other part of the package.
"""
