"""Alembic environment of the jobs service: the shared async env with the jobs metadata."""

import os

from alembic import context

from hirepay_platform.db import async_url
from hirepay_platform.migrations import run_env
from jobs.adapters.tables import metadata

# The CLI (alembic -c services/jobs/alembic.ini) takes the URL from the jobs settings variable.
if not context.config.get_main_option("sqlalchemy.url") and os.environ.get("JOBS_DATABASE_URL"):
    url = async_url(os.environ["JOBS_DATABASE_URL"])
    context.config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

run_env(metadata)
