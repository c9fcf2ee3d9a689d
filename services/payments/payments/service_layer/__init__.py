"""Payments: the service_layer layer."""
