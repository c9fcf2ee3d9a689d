"""Payments: the adapters layer."""
