"""Myopia and shutdown: comparison tables and figures of methods that can shut themselves down."""
