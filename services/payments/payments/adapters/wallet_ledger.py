"""The wallet over gRPC as payments' CreditsLedger: books a plan purchase (its money through
provider clearing, its credits from ISSUANCE) and reads a user's credits. Wire types stay here."""

from __future__ import annotations

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.client import ServiceClient
from payments.domain.credits import CREDIT_UNITS, CreditGrant, GrantKind

PLATFORM_OWNER = "platform"


class WalletLedger:
    """Opens its channel on first use, inside the running event loop (aio channels bind to it)."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self._client: ServiceClient | None = None
        self._accounts: dict[tuple[str, str, int], str] = {}

    @property
    def client(self) -> ServiceClient:
        if self._client is None:
            self._client = ServiceClient("wallet", self.target, timeout=self.timeout)
        return self._client

    @property
    def stub(self) -> wpb_grpc.WalletServiceStub:
        return wpb_grpc.WalletServiceStub(self.client.channel)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.close()

    async def _account(self, owner: str, unit: str, kind: int) -> str:
        key = (owner, unit, kind)
        if key not in self._accounts:
            # System accounts on the other side of users' balances may go below zero.
            system = kind in (wpb.ACCOUNT_KIND_ISSUANCE, wpb.ACCOUNT_KIND_PROVIDER_CLEARING)
            request = wpb.OpenAccountRequest(
                request_id=f"open:{owner}:{unit}:{kind}",
                owner_id=owner,
                currency=unit,
                kind=kind,  # type: ignore[arg-type]
                allow_negative=system,
            )
            reply = await self.client.call(self.stub.OpenAccount, request)
            self._accounts[key] = str(reply.account.account_id)
        return self._accounts[key]

    async def _leg(self, grant: CreditGrant, unit: str, amount: int) -> wpb.TransferLeg:
        if unit in CREDIT_UNITS:
            source = await self._account(PLATFORM_OWNER, unit, wpb.ACCOUNT_KIND_ISSUANCE)
            user = await self._account(grant.user_id, unit, wpb.ACCOUNT_KIND_USER)
            pair = (source, user)
        else:  # the purchase's money: captured by the provider, earned by the platform
            source = await self._account(PLATFORM_OWNER, unit, wpb.ACCOUNT_KIND_PROVIDER_CLEARING)
            revenue = await self._account(PLATFORM_OWNER, unit, wpb.ACCOUNT_KIND_PLATFORM_REVENUE)
            pair = (source, revenue)
        from_id, to_id = pair if grant.kind is GrantKind.ISSUE else pair[::-1]
        return wpb.TransferLeg(
            from_account_id=from_id,
            to_account_id=to_id,
            amount=common_pb2.Money(amount_minor=amount, currency=unit),
        )

    async def move(self, grant: CreditGrant, amounts: dict[str, int]) -> None:
        legs = [
            await self._leg(grant, unit, amount)
            for unit, amount in sorted(amounts.items())
            if amount > 0
        ]
        if not legs:
            return  # a revocation of a purchase whose credits were all spent, with nothing paid
        request = wpb.TransferRequest(
            request_id=grant.transfer_id,
            transfer_id=grant.transfer_id,
            legs=legs,
            description=f"Plan purchase {grant.transaction_id}: {grant.kind.value}",
            metadata={"transaction_id": grant.transaction_id, "kind": grant.kind.value},
        )
        await self.client.call(self.stub.Transfer, request)

    async def available(self, user_id: str) -> dict[str, int]:
        found = dict.fromkeys(CREDIT_UNITS, 0)
        token = ""
        while True:
            reply = await self.client.call(
                self.stub.ListAccounts,
                wpb.ListAccountsRequest(
                    owner_id=user_id, page=common_pb2.PageRequest(page_size=200, page_token=token)
                ),
            )
            for account in reply.accounts:
                if account.kind == wpb.ACCOUNT_KIND_USER and account.currency in found:
                    found[account.currency] = int(account.balance.available_minor)
            token = reply.next_page_token
            if not token:
                return found
