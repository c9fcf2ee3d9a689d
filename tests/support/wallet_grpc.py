"""Tests as callers of the wallet over real gRPC: arranging helpers (open, fund, transfer, read a
balance) on a stub, and reading a refused call's status and ErrorInfo."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from typing import Any

import grpc
import pytest

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as pb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as pb_grpc
from hirepay_platform.grpc_status import error_info

USD = "USD"


def money(amount: int, unit: str = USD) -> common_pb2.Money:
    return common_pb2.Money(amount_minor=amount, currency=unit)


def branch(gtx: str, branch_id: str = "payment") -> common_pb2.TccBranch:
    return common_pb2.TccBranch(global_tx_id=gtx, branch_id=branch_id)


def uid() -> str:
    return uuid.uuid4().hex[:12]


class Client:
    """Arranging helpers over the stub; every call has a deadline. Owners get a per-client tag so
    tests sharing a database never see each other's accounts."""

    def __init__(self, stub: pb_grpc.WalletServiceStub) -> None:
        self.stub = stub
        self.tag = uid()

    def owner(self, name: str) -> str:
        return f"{name}-{self.tag}"

    async def open(self, owner: str, kind=pb.ACCOUNT_KIND_USER, unit=USD, neg=False) -> str:
        reply = await self.stub.OpenAccount(
            pb.OpenAccountRequest(
                request_id=uid(),
                owner_id=self.owner(owner),
                currency=unit,
                kind=kind,
                allow_negative=neg,
            ),
            timeout=5,
        )
        return reply.account.account_id

    async def fund(self, account_id: str, amount: int, unit: str = USD) -> None:
        source = await self.open("clearing", pb.ACCOUNT_KIND_PROVIDER_CLEARING, unit=unit, neg=True)
        await self.transfer(f"fund-{uid()}", (source, account_id, amount, unit))

    async def transfer(self, transfer_id: str, *legs: tuple[Any, ...], **extra: Any):
        """Legs are (from, to, amount) in USD or (from, to, amount, unit)."""
        request = pb.TransferRequest(
            request_id=uid(),
            transfer_id=transfer_id,
            legs=[
                pb.TransferLeg(
                    from_account_id=leg[0],
                    to_account_id=leg[1],
                    amount=money(leg[2], leg[3] if len(leg) > 3 else USD),
                )
                for leg in legs
            ],
            **extra,
        )
        return await self.stub.Transfer(request, timeout=5)

    async def balance(self, account_id: str) -> tuple[int, int, int]:
        reply = await self.stub.GetAccount(pb.GetAccountRequest(account_id=account_id), timeout=5)
        b = reply.account.balance
        return b.posted_minor, b.pending_minor, b.available_minor


async def refused(call: Awaitable[Any]) -> tuple[grpc.StatusCode, str, dict[str, str]]:
    """The status code, ErrorInfo reason and metadata of a call that must fail."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    info = error_info(caught.value)
    assert info is not None and info.domain == "wallet.hirepay"
    return caught.value.code(), info.reason, dict(info.metadata)
