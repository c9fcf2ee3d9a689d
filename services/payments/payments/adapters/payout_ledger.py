"""The wallet over gRPC as withdrawals' PayoutLedger (ESC-9): a hold on the user's cash wallet,
posted to the provider's clearing account when the payout is paid, released when it failed, and
the posted amount credited back when the bank returns a paid payout.
Wire types stay here; the accounts follow the ledger conventions (MARKETPLACE.md)."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from payments.adapters.wallet_ledger import WalletLedger
from payments.domain.ledger import Account, Kind, clearing
from payments.domain.payouts import HOLD_TTL_SECONDS, Withdrawal


def _branch(withdrawal: Withdrawal) -> common_pb2.TccBranch:
    branch = withdrawal.branch
    return common_pb2.TccBranch(global_tx_id=branch.global_tx_id, branch_id=branch.branch_id)


class WalletPayoutLedger(WalletLedger):
    """The same channel and account cache as the credits ledger, with the withdrawal's steps."""

    async def hold(self, withdrawal: Withdrawal) -> None:
        user = await self.account_id(Account(withdrawal.user_id, withdrawal.currency, Kind.USER))
        cash = await self.account_id(clearing(withdrawal.provider, withdrawal.currency))
        request = wpb.ReserveHoldRequest(
            request_id=f"{withdrawal.key('hold')}",
            branch=_branch(withdrawal),
            account_id=user,
            destination_account_id=cash,
            amount=common_pb2.Money(
                amount_minor=withdrawal.amount_minor, currency=withdrawal.currency
            ),
            expires_in_seconds=HOLD_TTL_SECONDS,
            description=f"Withdrawal {withdrawal.id}",
        )
        await self.client.call(self.stub.ReserveHold, request)

    async def post(self, withdrawal: Withdrawal) -> None:
        request = wpb.ConfirmHoldRequest(
            request_id=withdrawal.key("post"), branch=_branch(withdrawal)
        )
        await self.client.call(self.stub.ConfirmHold, request)

    async def release(self, withdrawal: Withdrawal, reason: str) -> None:
        request = wpb.CancelHoldRequest(
            request_id=withdrawal.key("release"), branch=_branch(withdrawal), reason=reason
        )
        await self.client.call(self.stub.CancelHold, request)

    async def credit_back(self, withdrawal: Withdrawal) -> None:
        user = await self.account_id(Account(withdrawal.user_id, withdrawal.currency, Kind.USER))
        cash = await self.account_id(clearing(withdrawal.provider, withdrawal.currency))
        transfer_id = withdrawal.credit_back_transfer_id
        request = wpb.TransferRequest(
            request_id=transfer_id,
            transfer_id=transfer_id,
            legs=[
                wpb.TransferLeg(
                    from_account_id=cash,
                    to_account_id=user,
                    amount=common_pb2.Money(
                        amount_minor=withdrawal.amount_minor, currency=withdrawal.currency
                    ),
                )
            ],
            description=f"Withdrawal {withdrawal.id} returned by the bank",
            metadata={"subject_id": withdrawal.id, "kind": "payout_returned"},
        )
        await self.client.call(self.stub.Transfer, request)
