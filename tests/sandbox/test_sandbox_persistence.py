"""The sandbox keeps its state across a crash: a payment created before `kill -9` is still there
after a restart, and its idempotency key still answers the same payment (no second charge)."""

from __future__ import annotations

from pathlib import Path

from hirepay_dev.procs import free_port
from hirepay_dev.sandbox_client import SandboxAdmin, start_sandbox, stripe_client
from tests.support.waiting import eventually


def _saved(state: Path, *needles: str) -> bool:
    """Whether the sandbox's state file exists and mentions every one of `needles`."""
    text = state.read_text() if state.exists() else ""
    return bool(text) and all(needle in text for needle in needles)


def test_state_survives_a_crash_and_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "sandbox-state.json"
    port = free_port()
    env = {"SANDBOX_STATE_FILE": str(state)}
    process, url = start_sandbox(name="sandbox-persistence", port=port, env=env)
    try:
        sdk = stripe_client(url, allow_sync=True)
        params = {
            "amount": 4200,
            "currency": "usd",
            "payment_method": "pm_card_visa",
            "confirm": True,
            "capture_method": "manual",
            "payment_method_types": ["card"],
        }
        intent = sdk.v1.payment_intents.create(
            params=params, options={"idempotency_key": "persist-1"}
        )
        assert intent.status == "requires_capture"
        # The state file is replaced atomically soon after a change: wait for it to hold both.
        eventually(lambda: _saved(state, intent.id, "persist-1"), 10, "state saved", interval=0.05)
        process.kill()  # a crash: no graceful shutdown, nothing saved at exit
    finally:
        process.stop()
    assert state.exists()

    process, url = start_sandbox(name="sandbox-persistence", port=port, env=env)
    try:
        sdk = stripe_client(url, allow_sync=True)
        again = sdk.v1.payment_intents.retrieve(intent.id)
        assert again.status == "requires_capture" and again.amount == 4200
        replay = sdk.v1.payment_intents.create(
            params=params, options={"idempotency_key": "persist-1"}
        )
        assert replay.id == intent.id  # the saved response, not a second payment
        captured = sdk.v1.payment_intents.capture(intent.id)
        assert captured.status == "succeeded"
        process.stop()  # graceful: saved at shutdown too
        process, url = start_sandbox(name="sandbox-persistence", port=port, env=env)
        sdk = stripe_client(url, allow_sync=True)
        assert sdk.v1.payment_intents.retrieve(intent.id).status == "succeeded"
        listed = sdk.v1.payment_intents.list(params={"limit": 10})
        assert [p.id for p in listed.data] == [intent.id]
        admin = SandboxAdmin(url)
        try:
            admin.reset()  # a reset is kept too: the next start is empty
        finally:
            admin.close()
        eventually(lambda: not _saved(state, intent.id), 10, "reset saved", interval=0.05)
    finally:
        process.stop()
    process, url = start_sandbox(name="sandbox-persistence", port=port, env=env)
    try:
        sdk = stripe_client(url, allow_sync=True)
        assert sdk.v1.payment_intents.list(params={"limit": 10}).data == []
    finally:
        process.stop()


def test_a_payout_on_its_way_settles_after_a_restart(tmp_path: Path) -> None:
    """A connected account's payout pending when the sandbox crashed is still paid afterwards,
    and one whose bank account fails still fails with its code."""
    state = tmp_path / "sandbox-state.json"
    port = free_port()
    env = {"SANDBOX_STATE_FILE": str(state), "SANDBOX_PAYOUT_SETTLE_AFTER": "never"}
    process, url = start_sandbox(name="sandbox-payout-restart", port=port, env=env)
    try:
        sdk = stripe_client(url, allow_sync=True)
        good = sdk.v1.accounts.create(params={"type": "express"})
        bad = sdk.v1.accounts.create(
            params={"type": "custom", "external_account": {"account_number": "000111111116"}}
        )
        paid = sdk.v1.payouts.create(
            params={"amount": 1_000, "currency": "usd"}, options={"stripe_account": good.id}
        )
        failing = sdk.v1.payouts.create(
            params={"amount": 1_000, "currency": "usd"}, options={"stripe_account": bad.id}
        )
        eventually(lambda: _saved(state, paid.id, failing.id), 10, "state saved", interval=0.05)
        process.kill()
    finally:
        process.stop()

    env["SANDBOX_PAYOUT_SETTLE_AFTER"] = "0.2"
    process, url = start_sandbox(name="sandbox-payout-restart", port=port, env=env)
    try:
        sdk = stripe_client(url, allow_sync=True)

        def status(payout_id: str, account: str) -> str:
            got = sdk.v1.payouts.retrieve(payout_id, options={"stripe_account": account})
            return f"{got.status}:{got.failure_code or ''}"

        eventually(lambda: status(paid.id, good.id) == "paid:", 10, "paid after restart")
        eventually(
            lambda: status(failing.id, bad.id) == "failed:no_account", 10, "failed after restart"
        )
    finally:
        process.stop()
