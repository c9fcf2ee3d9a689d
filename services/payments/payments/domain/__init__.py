"""Payments: the domain layer."""
