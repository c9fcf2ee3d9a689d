"""SEC-2 inside payments: what the verified caller of an RPC may reach (owner, admin, or an
internal service acting for itself); others' objects answer as if absent."""

from __future__ import annotations

from hirepay_platform.errors import PermissionDenied
from hirepay_platform.identity import Caller
from payments.domain import commands, errors
from payments.domain.payouts import Withdrawal
from payments.domain.transactions import Transaction
from payments.service_layer.deps import Deps
from payments.service_layer.handlers import (
    RefundResult,
    get_payment,
    payouts,
    refund,
    returns,
    subscriptions,
)


async def verify_transaction(caller: Caller, transaction_id: str, deps: Deps) -> Transaction:
    """The transaction, brought up to date with the provider, if the caller reaches its owner's
    objects; ownership is checked first, so a stranger's id triggers nothing and answers absent."""
    txn = await subscriptions.get_transaction(transaction_id, deps)
    if not caller.reaches(txn.user_id):
        raise errors.TransactionNotFound(transaction_id)
    return await returns.verify_transaction(transaction_id, deps)


async def refund_payment(caller: Caller, cmd: commands.Refund, deps: Deps) -> RefundResult:
    """Refund for the payment's owner, an admin, or an internal caller with the right (jobs)."""
    payment = await get_payment(cmd.payment_id, deps)
    if not caller.reaches(payment.owner_id):
        raise errors.PaymentNotFound(cmd.payment_id)
    return await refund(cmd, deps)


def check_subscriber(caller: Caller, cmd: commands.Subscribe) -> None:
    """Through the gateway a user subscribes only themselves (an admin may act for anyone)."""
    if not caller.reaches(cmd.user_id):
        raise PermissionDenied("a user may subscribe only themselves")


def check_admin(caller: Caller) -> None:
    """Admin functions (a subscription refund): through the gateway only for admins; an internal
    caller's access is granted by the RPC's policy."""
    if caller.is_edge and not caller.user.is_admin:
        raise PermissionDenied("admins only")


def check_reaches(
    caller: Caller,
    user_id: str,
    refusal: str = "a user may read only their own subscription status",
) -> None:
    """A user's own data or money (subscription status, a coin purchase): the user, an admin, or
    an internal caller."""
    if not caller.reaches(user_id):
        raise PermissionDenied(refusal)


def check_payout_user(caller: Caller, user_id: str) -> None:
    """Payout accounts and withdrawals (ESC-9): a user acts and reads only for themselves; an
    admin reads (and acts) for anyone."""
    check_reaches(caller, user_id, "a user may reach only their own payout account and withdrawals")


async def get_withdrawal(caller: Caller, withdrawal_id: str, deps: Deps) -> Withdrawal:
    """A withdrawal for its owner or an admin; others' answer as if absent."""
    withdrawal = await payouts.get_withdrawal(withdrawal_id, deps)
    if not caller.reaches(withdrawal.user_id):
        raise errors.WithdrawalNotFound(withdrawal_id)
    return withdrawal
