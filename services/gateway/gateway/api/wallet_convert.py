"""HTTP <-> gRPC for the wallet's reads (ESC-11): query filters to requests, ledger messages to the
HTTP models of api/wallet_models.py."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf import timestamp_pb2

from gateway.api import wallet_models as m
from gateway.api.convert import timestamp_to_iso
from gateway.api.errors import validation_failed
from hirepay.wallet.v1 import wallet_service_pb2 as wallet_pb
from hirepay_platform.money import NON_CASH_UNITS, Money, is_cash

KIND_TO_PROTO: dict[str, wallet_pb.AccountKind.ValueType] = {
    "user": wallet_pb.ACCOUNT_KIND_USER,
    "platform_revenue": wallet_pb.ACCOUNT_KIND_PLATFORM_REVENUE,
    "escrow": wallet_pb.ACCOUNT_KIND_ESCROW,
    "provider_clearing": wallet_pb.ACCOUNT_KIND_PROVIDER_CLEARING,
    "payouts": wallet_pb.ACCOUNT_KIND_PAYOUTS,
    "issuance": wallet_pb.ACCOUNT_KIND_ISSUANCE,
}
_KIND_FROM_PROTO = {number: name for name, number in KIND_TO_PROTO.items()}
PERIOD_TO_PROTO = {"day": wallet_pb.EARNINGS_PERIOD_DAY, "month": wallet_pb.EARNINGS_PERIOD_MONTH}


def timestamp(value: datetime | None, field: str) -> timestamp_pb2.Timestamp | None:
    """A query's time as a protobuf Timestamp; a time without a zone is UTC. A time that leaves
    the years 1-9999 once in UTC is a 400 naming the parameter."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    stamp = timestamp_pb2.Timestamp()
    try:
        stamp.FromDatetime(value.astimezone(UTC))
    except (OverflowError, ValueError):
        raise validation_failed({field: "out of range"}) from None
    return stamp


def iso(value: datetime) -> str:
    """RFC 3339 UTC with a Z (a time without a zone is UTC)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _display(amount: int, unit: str) -> str:
    return Money(amount, unit).to_decimal_string()


def _category(unit: str) -> str:
    if unit == "COIN":
        return "coins"
    return "credits" if unit in NON_CASH_UNITS or not is_cash(unit) else "cash"


def wallet_to_http(user_id: str, reply: wallet_pb.GetWalletSummaryResponse) -> m.WalletOut:
    balances = []
    for account in reply.accounts:
        b, unit = account.balance, account.currency
        balances.append(
            m.WalletBalanceOut(
                unit=unit,
                category=_category(unit),  # type: ignore[arg-type]
                availableMinor=b.available_minor,
                heldMinor=b.pending_minor,
                postedMinor=b.posted_minor,
                available=_display(b.available_minor, unit),
                held=_display(b.pending_minor, unit),
            )
        )
    return m.WalletOut(userId=user_id, balances=balances)


def _kind(number: int) -> str | None:
    return _KIND_FROM_PROTO.get(number)


def transaction_to_http(line: wallet_pb.LedgerLine) -> m.TransactionOut:
    amount, unit = line.amount.amount_minor, line.amount.currency
    return m.TransactionOut(
        id=str(line.entry_id),
        transferId=line.transfer_id,
        accountId=line.account_id,
        ownerId=line.owner_id,
        accountKind=_kind(line.account_kind),  # type: ignore[arg-type]
        unit=unit,
        amountMinor=amount,
        amount=_display(amount, unit),
        direction="credit" if amount > 0 else "debit",
        counterparty=_kind(line.counterparty_kind),  # type: ignore[arg-type]
        description=line.description,
        metadata=dict(line.metadata),
        createdAt=timestamp_to_iso(line.created_at, line.HasField("created_at")),
    )


def transactions_to_http(reply: wallet_pb.ListLedgerLinesResponse) -> m.TransactionsOut:
    return m.TransactionsOut(
        transactions=[transaction_to_http(line) for line in reply.lines],
        nextCursor=reply.next_page_token or None,
    )


def _bucket_to_http(bucket: wallet_pb.EarningsBucket) -> m.EarningsBucketOut:
    return m.EarningsBucketOut(
        periodStart=timestamp_to_iso(bucket.period_start, bucket.HasField("period_start")),
        unit=bucket.unit,
        creditedMinor=bucket.credited_minor,
        debitedMinor=bucket.debited_minor,
        netMinor=bucket.net_minor,
        net=_display(bucket.net_minor, bucket.unit),
    )


def earnings_to_http(
    since: datetime, until: datetime, period: str, reply: wallet_pb.GetCommissionEarningsResponse
) -> m.EarningsOut:
    return m.EarningsOut(
        from_=iso(since),
        to=iso(until),
        period=period,  # type: ignore[arg-type]
        buckets=[_bucket_to_http(b) for b in reply.buckets],
        totals=[_bucket_to_http(b) for b in reply.totals],
    )


def wallets_to_http(reply: wallet_pb.ListBalancesResponse) -> m.AdminWalletsOut:
    return m.AdminWalletsOut(
        wallets=[
            m.AdminWalletOut(
                accountId=a.account_id,
                ownerId=a.owner_id,
                kind=_kind(a.kind),  # type: ignore[arg-type]
                unit=a.currency,
                postedMinor=a.balance.posted_minor,
                heldMinor=a.balance.pending_minor,
                availableMinor=a.balance.available_minor,
                allowNegative=a.allow_negative,
                createdAt=timestamp_to_iso(a.created_at, a.HasField("created_at")),
            )
            for a in reply.accounts
        ],
        nextCursor=reply.next_page_token or None,
    )
