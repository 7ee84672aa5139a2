"""Reproducible experiments built on v2pe's own commands (each in a folder of its own)."""
