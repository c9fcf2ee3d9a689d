"""Payments: the entrypoints layer."""
