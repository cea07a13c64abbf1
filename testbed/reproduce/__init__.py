"""Reproductions: published results the testbed re-measures, each with its expected band
(`testbed.reproduce.base`; the entries in `testbed.reproduce.entries`; `testbed reproduce`)."""
