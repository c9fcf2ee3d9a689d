"""Hirepay platform library: the one place for server bootstrap, errors, settings, DB, metrics, tracing."""
