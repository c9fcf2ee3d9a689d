"""The poller: resolves leased UNKNOWN/pending payments and pending refunds (several replicas
share the work through SKIP LOCKED leases)."""

from __future__ import annotations

import logging

from payments.service_layer.deps import Deps
from payments.service_layer.handlers.engine import drive
from payments.service_layer.handlers.refunds import advance_refund

log = logging.getLogger(__name__)


async def poll_due(deps: Deps, *, actor: str = "poller") -> int:
    """One round of the poller: resolve leased UNKNOWN/pending payments and pending refunds.

    Safe with several replicas: rows are leased with FOR UPDATE SKIP LOCKED."""
    config = deps.config
    async with deps.uow as uow:
        await uow.autocommit()  # each lease is one statement: a transaction of its own
        now = deps.clock()
        due = await uow.payments.lease_due(now, config.poll_batch, config.lease_seconds)
        refunds = await uow.refunds.lease_due(now, config.poll_batch, config.lease_seconds)
        await uow.commit()
    for payment in due:
        try:
            await drive(deps, payment, actor=actor, direct=False)
        except Exception:  # one bad payment must not stop the others
            log.exception("polling payment %s failed", payment.id)
    for ref in refunds:
        try:
            async with deps.uow as uow:
                payment = await uow.payments.get(ref.payment_id)
            if payment is not None:
                await advance_refund(deps, ref, payment, actor=actor)
        except Exception:
            log.exception("polling refund %s failed", ref.id)
    return len(due) + len(refunds)
