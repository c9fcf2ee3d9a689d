"""Alembic environment of the payments database: the shared async runner over our tables."""

from hirepay_platform.migrations import run_env
from payments.adapters.tables import metadata

run_env(metadata)
