"""Fixtures of the platform's tests."""

from tests.support.pg_round_trips import round_trips  # noqa: F401 (a fixture, counted round trips)
