"""Gradient routing: measurements (ablation, localization, recovery, identification), suite tables, figure."""
