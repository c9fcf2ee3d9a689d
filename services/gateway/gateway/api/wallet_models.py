"""HTTP models of the wallet's reads (issue 9 §6 and §8, ESC-11): a user's balances and history, and
the admin reports (commission earnings, every wallet, every transaction). Amounts are integers in
the unit's minor unit (`...Minor`), with a display string beside them; never floats."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

AccountKindName = Literal[
    "user", "platform_revenue", "escrow", "provider_clearing", "payouts", "issuance"
]


class WalletBalanceOut(BaseModel):
    """One unit of the wallet: cash in a currency, coins, or credits."""

    unit: str = Field(description="ISO 4217 currency, COIN, JOB_CREDIT or CANDIDATE_CREDIT.")
    category: Literal["cash", "coins", "credits"]
    availableMinor: int = Field(description="What may be spent or withdrawn: posted - held.")
    heldMinor: int = Field(description="Reserved by pending holds (offers, withdrawals).")
    postedMinor: int = Field(description="Everything booked on the account.")
    available: str = Field(description="availableMinor with the unit's exponent, for display.")
    held: str = Field(description="heldMinor with the unit's exponent, for display.")


class WalletOut(BaseModel):
    """`GET /api/wallet`: the caller's balances, one per unit they hold."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "userId": "contractor-42",
                    "balances": [
                        {
                            "unit": "COIN",
                            "category": "coins",
                            "availableMinor": 3500,
                            "heldMinor": 1200,
                            "postedMinor": 4700,
                            "available": "3500",
                            "held": "1200",
                        },
                        {
                            "unit": "USD",
                            "category": "cash",
                            "availableMinor": 70000,
                            "heldMinor": 0,
                            "postedMinor": 70000,
                            "available": "700.00",
                            "held": "0.00",
                        },
                    ],
                }
            ]
        }
    )

    userId: str
    balances: list[WalletBalanceOut]


class TransactionOut(BaseModel):
    """One ledger entry on an account: what moved, in which direction, and why."""

    id: str = Field(description="The entry's id (newer entries have larger ids).")
    transferId: str = Field(description="The ledger transaction, e.g. engagement:<id>:complete.")
    accountId: str
    ownerId: str
    accountKind: AccountKindName
    unit: str
    amountMinor: int = Field(description="Signed: positive credits the account, negative debits.")
    amount: str = Field(description="amountMinor with the unit's exponent, for display.")
    direction: Literal["credit", "debit"]
    counterparty: AccountKindName | None = Field(
        description="The kind of account on the other side (the largest opposite entry)."
    )
    description: str
    metadata: dict[str, str]
    createdAt: str | None = Field(description="RFC 3339, UTC.")


_TRANSACTION_EXAMPLE = {
    "id": "1842",
    "transferId": "engagement:eng_9c1f:complete",
    "accountId": "6f1d2c3e-8a4b-4c1d-9e2f-0a1b2c3d4e5f",
    "ownerId": "contractor-42",
    "accountKind": "user",
    "unit": "USD",
    "amountMinor": 70000,
    "amount": "700.00",
    "direction": "credit",
    "counterparty": "escrow",
    "description": "engagement completed",
    "metadata": {"engagement_id": "eng_9c1f"},
    "createdAt": "2026-11-30T12:00:00Z",
}


class TransactionsOut(BaseModel):
    """A page of ledger entries, newest first; pass `nextCursor` as `cursor` for the next page."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"transactions": [_TRANSACTION_EXAMPLE], "nextCursor": "eyJwIjoxODQyfQ"}]
        }
    )

    transactions: list[TransactionOut]
    nextCursor: str | None = Field(description="Absent on the last page.")


class EarningsBucketOut(BaseModel):
    """What platform revenue earned in one period (or the whole range) in one unit."""

    periodStart: str | None = Field(description="UTC start of the day or month (RFC 3339).")
    unit: str
    creditedMinor: int = Field(description="Fees and commissions booked to revenue.")
    debitedMinor: int = Field(description="Refunded fees taken back from revenue.")
    netMinor: int = Field(description="creditedMinor - debitedMinor.")
    net: str = Field(description="netMinor with the unit's exponent, for display.")


class EarningsOut(BaseModel):
    """`GET /api/admin/earnings`: commission earnings by period and unit, net of refunds."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "from": "2026-11-01T00:00:00Z",
                    "to": "2026-12-01T00:00:00Z",
                    "period": "day",
                    "buckets": [
                        {
                            "periodStart": "2026-11-30T00:00:00Z",
                            "unit": "USD",
                            "creditedMinor": 30000,
                            "debitedMinor": 10000,
                            "netMinor": 20000,
                            "net": "200.00",
                        }
                    ],
                    "totals": [
                        {
                            "periodStart": "2026-11-01T00:00:00Z",
                            "unit": "USD",
                            "creditedMinor": 30000,
                            "debitedMinor": 10000,
                            "netMinor": 20000,
                            "net": "200.00",
                        }
                    ],
                }
            ]
        },
        populate_by_name=True,
    )

    from_: str = Field(alias="from", serialization_alias="from")
    to: str
    period: Literal["day", "month"]
    buckets: list[EarningsBucketOut]
    totals: list[EarningsBucketOut] = Field(description="The whole range, per unit.")


class AdminWalletOut(BaseModel):
    """One account of the ledger with its balance."""

    accountId: str
    ownerId: str
    kind: AccountKindName
    unit: str
    postedMinor: int
    heldMinor: int
    availableMinor: int
    allowNegative: bool
    createdAt: str | None


class AdminWalletsOut(BaseModel):
    """`GET /api/admin/wallets`: accounts in opening order; `nextCursor` pages on."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "wallets": [
                        {
                            "accountId": "6f1d2c3e-8a4b-4c1d-9e2f-0a1b2c3d4e5f",
                            "ownerId": "contractor-42",
                            "kind": "user",
                            "unit": "USD",
                            "postedMinor": 70000,
                            "heldMinor": 0,
                            "availableMinor": 70000,
                            "allowNegative": False,
                            "createdAt": "2026-11-30T11:00:00Z",
                        }
                    ],
                    "nextCursor": None,
                }
            ]
        }
    )

    wallets: list[AdminWalletOut]
    nextCursor: str | None
