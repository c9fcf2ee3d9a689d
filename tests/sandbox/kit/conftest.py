"""Unit tests of sandbox_kit run in-process: no sandbox process to clean faults from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _no_faults_left() -> Iterator[None]:
    """Replaces the Stripe sandbox tests' autouse fixture (nothing is started here)."""
    yield
