"""Who drives a saga now: the lease owners of requests and CancelJob, and giving a lease up."""

from __future__ import annotations

from jobs.domain.posting_saga import REQUEST_HOLDER_SUFFIX
from jobs.service_layer.config import JobsConfig
from jobs.service_layer.deps import Deps


def request_holder(config: JobsConfig) -> str:
    """Lease owner of a saga while its request drives it (distinct from this process's workers)."""
    return f"{config.instance_id}{REQUEST_HOLDER_SUFFIX}"


def cancel_holder(config: JobsConfig) -> str:
    """Lease owner of a saga while a CancelJob request drives its Cancel or refund."""
    return f"{config.instance_id}/cancel{REQUEST_HOLDER_SUFFIX}"


async def release(saga_id: str, deps: Deps, owner: str) -> None:
    """Give up this process's lease on a saga, so another driver may take it when due."""
    uow = deps.uow
    async with uow:
        saga = await uow.sagas.get(saga_id, for_update=True)
        if saga is None or not saga.release_lease(owner):
            return
        await uow.sagas.save(saga)
        await uow.commit()
