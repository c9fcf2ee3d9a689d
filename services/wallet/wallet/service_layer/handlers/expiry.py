"""Use case of the hold-expiry worker: release pending holds whose expiry has passed."""

from __future__ import annotations

from wallet.domain import commands
from wallet.domain.ledger import plan_posting
from wallet.service_layer.deps import Deps
from wallet.service_layer.handlers.common import apply_posting


async def release_expired_holds(cmd: commands.ReleaseExpiredHolds, deps: Deps) -> int:
    """Release one batch of pending holds past their expiry; returns how many were released.

    Safe with several workers at once: each locks its batch with SKIP LOCKED, and a Confirm or
    Cancel holding a hold's lock makes the worker skip that hold rather than wait.
    """
    async with deps.uow() as uow:
        now = deps.clock()
        holds = await uow.holds.lock_expired(now, cmd.batch_size)
        if not holds:
            return 0
        for hold in holds:
            hold.expire(now)
        refs = await uow.accounts.refs({h.account_id for h in holds})
        changes = [h.release() for h in holds]
        await apply_posting(uow, None, plan_posting("expiry", [], refs, changes))
        await uow.holds.save(holds)
        await uow.commit()
    return len(holds)
