"""Helpers shared by test areas (import as `from tests.support.x import ...`)."""
