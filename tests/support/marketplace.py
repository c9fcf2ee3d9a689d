"""Helpers of the marketplace tests: calls to jobs as a signed-in user (the gateway's signed actor
assertion), and the wallet accounts of the ledger conventions (MARKETPLACE.md)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import grpc

from hirepay.common.v1 import common_pb2
from hirepay.jobs.v1 import jobs_service_pb2 as pb
from hirepay.jobs.v1 import jobs_service_pb2_grpc as pb_grpc
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from hirepay_platform.identity import Actor
from tests.support.service_auth import call_metadata


@dataclass(frozen=True)
class User:
    user_id: str
    role: str

    @classmethod
    def new(cls, role: str) -> User:
        return cls(f"{role[:4]}_{uuid.uuid4().hex[:10]}", role)

    def metadata(self) -> list[tuple[str, str]]:
        """One call's metadata: the gateway's service token and this user's signed assertion."""
        return call_metadata("gateway", "jobs", Actor(self.user_id, self.role))


class JobsAs:
    """The jobs service over an asyncio channel, each call made as a given user."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.aio.insecure_channel(target)
        self.stub = pb_grpc.JobsServiceStub(self.channel)

    async def call(self, user: User, method: str, request, timeout: float = 30):  # type: ignore[no-untyped-def]
        return await getattr(self.stub, method)(request, metadata=user.metadata(), timeout=timeout)

    async def post_job(self, customer: User, title: str = "Fix the kitchen sink") -> pb.MarketJob:
        request = pb.PostMarketJobRequest(
            request_id=uuid.uuid4().hex,
            title=title,
            description="A leaking kitchen sink needs a plumber this week.",
        )
        return (await self.call(customer, "PostMarketJob", request)).job

    async def send_offer(  # type: ignore[no-untyped-def]
        self,
        customer: User,
        job_id: str,
        contractor: User,
        amount_minor: int,
        unit: str = "USD",
        *,
        funding=pb.FUNDING_SOURCE_CARD,
        token: str = "pm_card_visa",
        key: str = "",
    ) -> pb.OfferResponse:
        request = pb.SendOfferRequest(
            request_id=key or uuid.uuid4().hex,
            job_id=job_id,
            contractor_id=contractor.user_id,
            amount=common_pb2.Money(amount_minor=amount_minor, currency=unit),
            funding=funding,
            payment_method=token if funding == pb.FUNDING_SOURCE_CARD else "",
        )
        return await self.call(customer, "SendOffer", request)

    async def close(self) -> None:
        await self.channel.close()


class Ledger:
    """The wallet accounts of the ledger conventions, opened idempotently, and their balances."""

    def __init__(self, wallet: wpb_grpc.WalletServiceStub) -> None:
        self.wallet = wallet

    def account(self, owner: str, unit: str, kind: int, *, allow_negative: bool = False) -> str:
        reply = self.wallet.OpenAccount(
            wpb.OpenAccountRequest(
                request_id=f"open:{owner}:{unit}:{kind}",
                owner_id=owner,
                currency=unit,
                kind=kind,  # type: ignore[arg-type]
                allow_negative=allow_negative,
            ),
            timeout=5,
        )
        return str(reply.account.account_id)

    def balance(self, account_id: str) -> wpb.Balance:
        return self.wallet.GetAccount(
            wpb.GetAccountRequest(account_id=account_id), timeout=5
        ).account.balance

    def revenue(self, unit: str) -> str:
        return self.account("platform", unit, wpb.ACCOUNT_KIND_PLATFORM_REVENUE)

    def escrow(self, engagement_id: str, unit: str) -> str:
        return self.account(f"engagement:{engagement_id}", unit, wpb.ACCOUNT_KIND_ESCROW)

    def clearing(self, provider: str, unit: str) -> str:
        return self.account(
            f"provider:{provider}", unit, wpb.ACCOUNT_KIND_PROVIDER_CLEARING, allow_negative=True
        )

    def user(self, owner: str, unit: str) -> str:
        return self.account(owner, unit, wpb.ACCOUNT_KIND_USER)

    def grant_coins(self, owner: str, amount: int) -> str:
        """Issue `amount` coins to `owner` (as a coin purchase would); returns the account id."""
        issuance = self.account("platform", "COIN", wpb.ACCOUNT_KIND_ISSUANCE, allow_negative=True)
        target = self.user(owner, "COIN")
        self.wallet.Transfer(
            wpb.TransferRequest(
                request_id=uuid.uuid4().hex,
                transfer_id=f"grant-{uuid.uuid4().hex}",
                legs=[
                    wpb.TransferLeg(
                        from_account_id=issuance,
                        to_account_id=target,
                        amount=common_pb2.Money(amount_minor=amount, currency="COIN"),
                    )
                ],
                description="test coin grant",
            ),
            timeout=5,
        )
        return target
