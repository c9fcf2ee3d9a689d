"""The wallet over gRPC as payments' ledger: books what payments owes it (a plan purchase's money
and credits, every other captured payment's and refund's legs through provider clearing), alone
or many in one CreateTransfers call, and reads a user's credits and accounts' entries (the
auditor). Wire types stay here."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.client import LazyServiceClient
from hirepay_platform.errors import ErrorKind, HirepayError, RemoteError
from payments.domain.credits import CREDIT_UNITS, CreditGrant
from payments.domain.ledger import COIN, SYSTEM_KINDS, Account, Kind, issuance
from payments.domain.refunds import Refund

# The hold of the coins a refund takes back: global transaction `refund`, branch the refund's id.
COIN_REFUND_GLOBAL_TX = "refund"
# A refund whose outcome is unknown is polled for at most hours; the hold outlives that.
COIN_REFUND_HOLD_TTL_SECONDS = 30 * 24 * 3600

# Transfer ids per AuditTransferEntries call (the wallet's maximum).
_AUDIT_IDS = 1000

# google.rpc.Code numbers of a refused transfer in a CreateTransfers answer.
_KINDS = {
    3: ErrorKind.INVALID_ARGUMENT,
    5: ErrorKind.NOT_FOUND,
    6: ErrorKind.ALREADY_EXISTS,
    9: ErrorKind.FAILED_PRECONDITION,
    10: ErrorKind.ABORTED,
    14: ErrorKind.UNAVAILABLE,
}


# The wallet's AccountKind of each kind, made once (not a formatted name looked up per leg).
_ACCOUNT_KINDS = {kind: wpb.AccountKind.Value(f"ACCOUNT_KIND_{kind}") for kind in Kind}


class WalletLedger(LazyServiceClient[wpb_grpc.WalletServiceStub]):
    """Opens its channel on first use, inside the running event loop (aio channels bind to it),
    and makes the wallet's stub on it once."""

    def __init__(self, target: str, timeout: float) -> None:
        super().__init__("wallet", target, timeout, wpb_grpc.WalletServiceStub)
        self._accounts: dict[tuple[str, str, int], str] = {}

    async def account_id(self, account: Account) -> str:
        """The wallet's id of an account (opened on first use; OpenAccount is idempotent)."""
        kind = _ACCOUNT_KINDS[account.kind]
        key = (account.owner, account.unit, kind)
        if key not in self._accounts:
            request = wpb.OpenAccountRequest(
                request_id=f"open:{account.owner}:{account.unit}:{kind}",
                owner_id=account.owner,
                currency=account.unit,
                kind=kind,  # type: ignore[arg-type]
                allow_negative=account.kind in SYSTEM_KINDS,
            )
            reply = await self.client.call(self.stub.OpenAccount, request)
            self._accounts[key] = str(reply.account.account_id)
        return self._accounts[key]

    async def _transfer(self, grant: CreditGrant, amounts: dict[str, int]) -> wpb.TransferRequest:
        legs = [
            wpb.TransferLeg(
                from_account_id=await self.account_id(leg.source),
                to_account_id=await self.account_id(leg.target),
                amount=common_pb2.Money(amount_minor=leg.amount, currency=leg.source.unit),
            )
            for leg in grant.legs_for(amounts)
        ]
        subject = grant.payment_id or grant.transaction_id
        return wpb.TransferRequest(
            request_id=grant.transfer_id,
            transfer_id=grant.transfer_id,
            legs=legs,
            description=f"{grant.kind} {subject} ({grant.provider})",
            metadata={"subject_id": subject, "kind": str(grant.kind)},
        )

    async def move(self, grant: CreditGrant, amounts: dict[str, int]) -> None:
        request = await self._transfer(grant, amounts)
        if not request.legs:
            return  # a revocation of a purchase whose credits were all spent, with nothing paid
        await self.client.call(self.stub.Transfer, request)

    async def move_many(self, grants: list[CreditGrant]) -> list[HirepayError | None]:
        """Book several bookings in one CreateTransfers call (one wallet transaction); each has
        its own outcome: None (posted, or posted before: the transfer id is its key) or why not."""
        if not grants:
            return []
        transfers = [await self._transfer(g, g.amounts or {}) for g in grants]
        request = wpb.CreateTransfersRequest(
            request_id=f"batch:{grants[0].transfer_id}:{len(grants)}", transfers=transfers
        )
        reply = await self.client.call(self.stub.CreateTransfers, request)
        outcomes: list[HirepayError | None] = [None] * len(grants)
        for result in reply.results:
            if result.WhichOneof("outcome") == "error":
                err = result.error
                outcomes[result.index] = RemoteError(
                    err.message,
                    reason=err.reason,
                    kind=_KINDS.get(err.code, ErrorKind.FAILED_PRECONDITION),
                    metadata=dict(err.metadata),
                    service="wallet",
                )
        return outcomes

    async def existing_account_id(self, account: Account) -> str:
        """The wallet's id of an account, "" when never opened (listing by owner opens nothing;
        an id found is kept, like those of opened accounts)."""
        kind = _ACCOUNT_KINDS[account.kind]
        key = (account.owner, account.unit, kind)
        if key not in self._accounts:
            async for found in self._accounts_of(account.owner):
                if found.kind == kind and found.currency == account.unit:
                    self._accounts[key] = str(found.account_id)
        return self._accounts.get(key, "")

    async def transfer_entries(self, transfer_ids: Sequence[str]) -> list[tuple[str, str, int]]:
        """Every entry of the given transfers as (transfer id, account id, signed amount), for
        the auditor: AuditTransferEntries calls of at most _AUDIT_IDS ids each."""
        found: list[tuple[str, str, int]] = []
        for start in range(0, len(transfer_ids), _AUDIT_IDS):
            request = wpb.AuditTransferEntriesRequest(
                transfer_ids=transfer_ids[start : start + _AUDIT_IDS]
            )
            reply = await self.client.call(self.stub.AuditTransferEntries, request)
            found += [
                (e.transfer_id, e.account_id, int(e.amount.amount_minor)) for e in reply.entries
            ]
        return found

    async def hold_coins(self, refund: Refund, owner_id: str) -> None:
        request = wpb.ReserveHoldRequest(
            request_id=f"refund:{refund.id}:coins:hold",
            branch=_coin_branch(refund),
            account_id=await self.account_id(Account(owner_id, COIN, Kind.USER)),
            destination_account_id=await self.account_id(issuance(COIN)),
            amount=common_pb2.Money(amount_minor=refund.coins, currency=COIN),
            expires_in_seconds=COIN_REFUND_HOLD_TTL_SECONDS,
            description=f"Coins taken back by refund {refund.id} of {refund.payment_id}",
        )
        await self.client.call(self.stub.ReserveHold, request)

    async def take_coins(self, refund: Refund) -> None:
        request = wpb.ConfirmHoldRequest(
            request_id=f"refund:{refund.id}:coins:take", branch=_coin_branch(refund)
        )
        await self.client.call(self.stub.ConfirmHold, request)

    async def return_coins(self, refund: Refund, reason: str) -> None:
        request = wpb.CancelHoldRequest(
            request_id=f"refund:{refund.id}:coins:return",
            branch=_coin_branch(refund),
            reason=reason[:200],
        )
        await self.client.call(self.stub.CancelHold, request)

    async def _accounts_of(self, owner: str) -> AsyncIterator[wpb.Account]:
        token = ""
        while True:
            reply = await self.client.call(
                self.stub.ListAccounts,
                wpb.ListAccountsRequest(
                    owner_id=owner, page=common_pb2.PageRequest(page_size=200, page_token=token)
                ),
            )
            for account in reply.accounts:
                yield account
            token = reply.next_page_token
            if not token:
                return

    async def available(self, user_id: str) -> dict[str, int]:
        found = dict.fromkeys(CREDIT_UNITS, 0)
        async for account in self._accounts_of(user_id):
            if account.kind == wpb.ACCOUNT_KIND_USER and account.currency in found:
                found[account.currency] = int(account.balance.available_minor)
        return found


def _coin_branch(refund: Refund) -> common_pb2.TccBranch:
    return common_pb2.TccBranch(global_tx_id=COIN_REFUND_GLOBAL_TX, branch_id=refund.id)
