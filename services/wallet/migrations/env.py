"""Alembic environment of the wallet: the shared async env with the wallet's metadata."""

import os

from alembic import context

from hirepay_platform.db import async_url
from hirepay_platform.migrations import run_env
from wallet.adapters.tables import metadata

# The CLI (alembic -c services/wallet/alembic.ini) takes the URL from the wallet's settings variable.
if not context.config.get_main_option("sqlalchemy.url") and os.environ.get("WALLET_DATABASE_URL"):
    url = async_url(os.environ["WALLET_DATABASE_URL"])
    context.config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))

run_env(metadata)
