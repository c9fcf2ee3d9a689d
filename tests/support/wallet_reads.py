"""Reading the wallet's ledger in tests: an owner's posted balances by (kind, unit), over a channel
signed as payments (which may read any account)."""

from __future__ import annotations

from collections import Counter

from hirepay.common.v1 import common_pb2
from hirepay.wallet.v1 import wallet_service_pb2 as wpb
from hirepay.wallet.v1 import wallet_service_pb2_grpc as wpb_grpc
from tests.support.service_auth import signed_channel


def balances(wallet_target: str, owner: str) -> Counter[tuple[str, str]]:
    """Posted balances of an owner's accounts: (kind, unit) -> amount (no account: absent)."""
    found: Counter[tuple[str, str]] = Counter()
    with signed_channel(wallet_target, caller="payments", service="wallet") as channel:
        stub = wpb_grpc.WalletServiceStub(channel)
        token = ""
        while True:
            reply = stub.ListAccounts(
                wpb.ListAccountsRequest(
                    owner_id=owner, page=common_pb2.PageRequest(page_size=200, page_token=token)
                ),
                timeout=5,
            )
            for account in reply.accounts:
                kind = wpb.AccountKind.Name(account.kind).removeprefix("ACCOUNT_KIND_")
                found[(kind, account.currency)] = account.balance.posted_minor
            token = reply.next_page_token
            if not token:
                return found


def delta(
    before: Counter[tuple[str, str]], after: Counter[tuple[str, str]]
) -> dict[tuple[str, str], int]:
    """What changed between two readings (unchanged balances left out)."""
    keys = set(before) | set(after)
    return {k: after[k] - before[k] for k in sorted(keys) if after[k] != before[k]}
