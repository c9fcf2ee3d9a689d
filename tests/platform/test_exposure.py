"""What a running service exposes: metrics only on loopback by default, no SQL parameters in errors."""

from __future__ import annotations

import logging
import socket
import uuid

import pytest
from sqlalchemy import exc as sa_exc
from sqlalchemy import text

from hirepay_dev.services import WALLET, start_service
from hirepay_platform.db import create_engine
from hirepay_platform.logs import JsonFormatter, mask_secrets

EMAIL = "alice.private@example.test"


def listening_addresses(port: int) -> set[str]:
    """The local IPv4/IPv6 addresses with a socket LISTENing on `port` (from /proc/net/tcp*)."""
    found: set[str] = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = open(table).read().splitlines()[1:]  # noqa: SIM115 - a tiny procfs read
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":  # 0A = LISTEN
                continue
            raw = bytes.fromhex(address)
            if width == 8:
                found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
            else:
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
                found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


def test_a_started_service_serves_metrics_on_loopback_only(make_service_database) -> None:
    """`make run` starts services without METRICS_HOST: their /metrics must not face the network."""
    service = start_service(WALLET, make_service_database("wallet"))
    try:
        assert listening_addresses(service.metrics_port) == {"127.0.0.1"}
    finally:
        service.stop()


async def test_integrity_error_text_and_logs_carry_no_parameters(make_database) -> None:
    url = make_database("exposure")
    engine = create_engine(url)
    table = f"people_{uuid.uuid4().hex[:8]}"
    try:
        async with engine.begin() as conn:
            await conn.execute(text(f"CREATE TABLE {table} (email text UNIQUE)"))
            await conn.execute(text(f"INSERT INTO {table} VALUES (:email)"), {"email": EMAIL})
        with pytest.raises(sa_exc.IntegrityError) as caught:
            async with engine.begin() as conn:
                await conn.execute(text(f"INSERT INTO {table} VALUES (:email)"), {"email": EMAIL})
        assert "unique" in str(caught.value)  # the error still says what went wrong
        assert EMAIL not in str(caught.value)
        assert EMAIL not in repr(caught.value)
        # A service logs through the platform's JSON formatter; PostgreSQL's own DETAIL line
        # ("Key (email)=(...) already exists") rides along in the chained asyncpg error.
        record = logging.LogRecord(
            "hirepay.test",
            logging.ERROR,
            __file__,
            1,
            "insert failed",
            None,
            (type(caught.value), caught.value, caught.value.__traceback__),
        )
        logged = JsonFormatter("exposure").format(record)
        assert "insert failed" in logged and "UniqueViolationError" in logged
        assert "Key (email)=(***) already exists" in logged
        assert EMAIL not in logged
    finally:
        async with engine.begin() as conn:
            await conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        await engine.dispose()


def test_postgres_detail_lines_are_masked() -> None:
    failing = "DETAIL:  Failing row contains (42, bob@example.test, null)."
    assert mask_secrets(failing) == "DETAIL:  Failing row contains (***)."
    missing = 'Key (owner_email)=(bob@example.test) is not present in table "owners".'
    assert "bob@" not in mask_secrets(missing)
