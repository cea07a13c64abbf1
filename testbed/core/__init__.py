"""The ground floor: errors, statistics, provenance, registries and plug-ins.

Nothing here imports JAX or any other part of the package.
"""
