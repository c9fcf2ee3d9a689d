"""The in-process wake-up (payments.service_layer.wakeup): a wait ends at the next notification
or at its timeout, in the caller's own task (issue 13: asyncio.wait_for ran each wait of the
settlement stream's follower in a task of its own)."""

from __future__ import annotations

import asyncio

from payments.service_layer.wakeup import Wakeup
from tests.support.tasks import tasks_made


async def test_a_wait_ends_at_a_notification_or_its_timeout_in_its_own_task() -> None:
    wakeup = Wakeup()
    with tasks_made() as made:
        asyncio.get_running_loop().call_later(0.01, wakeup.notify)
        assert await wakeup.wait(5.0)  # notified
        assert not await wakeup.wait(0.01)  # nothing came: timed out
        early = wakeup.listen()
        wakeup.notify()  # before the wait: a wait started after it waits for the next one
        assert early.is_set()
        assert not await wakeup.wait(0.01)
    assert made == []
