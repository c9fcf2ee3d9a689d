"""Migration 0002: barrier rows written by 0001 (raw-value fingerprints in text) become the
platform's barrier rows, and a replay of a request made before the upgrade still matches."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from sqlalchemy import text

from hirepay_dev.services import PAYMENTS
from hirepay_platform.db import create_engine, make_session_factory
from hirepay_platform.fingerprint import decode, fingerprint
from hirepay_platform.migrations import upgrade_async
from hirepay_platform.tcc import IdempotencyMismatch, TccBranch, TryGate, enter_cancel, enter_try
from payments.adapters.unit_of_work import SqlPaymentsUnitOfWork

# What 0001's handlers stored: JSON of the raw fields (sorted keys).
OLD_TRY = {
    "amount": [2500, "USD"],
    "method": "CARD",
    "owner_id": "o",
    "payment_method_token": "pm_x",
}
OLD_SUBSCRIBE = {"currency": "USD", "email": "a@b.co", "plan": "MONTHLY"}


async def test_0002_converts_fingerprints_to_the_platform_form(
    make_database: Callable[[str], str],
) -> None:
    url = make_database("payments_migration")
    await upgrade_async(PAYMENTS.migrations, url, "0001")
    engine = create_engine(url)
    try:
        async with engine.begin() as conn:
            old = json.dumps(OLD_TRY, sort_keys=True, separators=(",", ":"))
            await conn.execute(
                text(
                    "INSERT INTO tcc_barriers VALUES"
                    " ('gtx-old', 'payment', 'try', 'try', :fp, now()),"
                    " ('gtx-void', 'payment', 'try', 'cancel', '', now()),"
                    " ('gtx-void', 'payment', 'cancel', 'cancel', '', now())"
                ),
                {"fp": old},
            )
            await conn.execute(
                text(
                    "INSERT INTO transactions (id, status, user_type, user_id, email,"
                    " amount_minor, currency, payment_method, provider, plan, period_days,"
                    " request_id, return_url, cancel_url, metadata, created_at, updated_at)"
                    " VALUES ('txn_old', 'PENDING', 'COMPANY', 'u', 'a@b.co', 3000, 'USD',"
                    " 'STRIPE', 'stripe', 'MONTHLY', 30, 'r', 'http://x', 'http://x',"
                    " CAST(:meta AS jsonb), now(), now())"
                ),
                {
                    "meta": json.dumps(
                        {"fingerprint": json.dumps(OLD_SUBSCRIBE, sort_keys=True), "subsystem": "x"}
                    )
                },
            )
        await upgrade_async(PAYMENTS.migrations, url, "head")
        uow = SqlPaymentsUnitOfWork(make_session_factory(engine))
        async with uow:
            barriers = uow.barriers
            assert (
                await enter_try(barriers, TccBranch("gtx-old", "payment"), fingerprint(OLD_TRY))
                is TryGate.REPLAY
            )
            with pytest.raises(IdempotencyMismatch) as caught:
                await enter_try(
                    barriers,
                    TccBranch("gtx-old", "payment"),
                    fingerprint({**OLD_TRY, "amount": [2600, "USD"]}),
                )
            assert caught.value.metadata["field"] == "amount"
            void_branch = TccBranch("gtx-void", "payment")
            assert await enter_try(barriers, void_branch, fingerprint(OLD_TRY)) is TryGate.CANCELLED
            assert (await enter_cancel(barriers, void_branch)).value == "replay"
            txn = await uow.transactions.get("txn_old")
            assert txn is not None and txn.metadata["subsystem"] == "x"
            assert decode(txn.metadata["fingerprint"]) == fingerprint(OLD_SUBSCRIBE)
            # A new row relies on the table's created_at default (the platform writes no time).
            fresh = TccBranch("gtx-new", "payment")
            assert await enter_try(barriers, fresh, fingerprint(OLD_TRY)) is TryGate.FIRST
            await uow.commit()
    finally:
        await engine.dispose()
