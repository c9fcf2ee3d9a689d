"""What a payment's money owes the wallet's ledger (ESC-1, "every cent"): the legs of the one
transfer a captured payment or a refund books through its provider's clearing account, under
deterministic transfer ids, and the coin rules of coin purchases and direct job payments (ESC-3,
ESC-5). Pure: integer minor units, no I/O."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from hirepay_platform import money
from payments.domain import errors

PLATFORM = "platform"
COIN = "COIN"
BPS = 10_000

# Metadata keys of a payment: what it pays for, and the snapshot of its coin terms taken when the
# checkout was opened (a later change of the rate or the fee never changes what it books).
TYPE_KEY = "type"
PURPOSE_KEY = "purpose"
COINS_KEY = "coins"
FEE_COINS_KEY = "fee_coins"
ENGAGEMENT_KEY = "engagement_id"
ESCROW_ACCOUNT_KEY = "escrow_account_id"


class Purpose(enum.StrEnum):
    """What a payment's money paid for (metadata `purpose`, else `type`)."""

    FEE = "fee"  # pay-to-post fees and anything else the platform earns outright
    MARKETPLACE = "marketplace"  # offer money: the jobs service books it (it knows the split)
    COIN_PURCHASE = "coin_purchase"
    JOB_PAYMENT = "job_payment"


# Each purpose by its value: a dict look-up, where `Purpose.__members__.values()` built a view
# through the enum's property for every key looked at (issue 13: three looks per posting).
PURPOSE_OF = {p.value: p for p in Purpose}


class Kind(enum.StrEnum):
    """Wallet account kinds, by the names of the wallet's AccountKind (without the prefix)."""

    USER = "USER"
    PLATFORM_REVENUE = "PLATFORM_REVENUE"
    ESCROW = "ESCROW"
    PROVIDER_CLEARING = "PROVIDER_CLEARING"
    ISSUANCE = "ISSUANCE"


# Each kind by its name, for reading legs back (a dict look-up, not the enum's call; issue 13).
KIND_OF = {k.value: k for k in Kind}

# Accounts on the other side of users' balances: they may go below zero.
SYSTEM_KINDS = frozenset({Kind.PROVIDER_CLEARING, Kind.ISSUANCE})


@dataclass(frozen=True, slots=True)
class Account:
    """A wallet account by what it is (opened idempotently on owner, unit and kind)."""

    owner: str
    unit: str
    kind: Kind


@dataclass(frozen=True, slots=True)
class Leg:
    source: Account
    target: Account
    amount: int

    def to_json(self) -> dict[str, object]:
        return {
            "from": [self.source.owner, self.source.unit, str(self.source.kind)],
            "to": [self.target.owner, self.target.unit, str(self.target.kind)],
            "amount": self.amount,
        }

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Leg:
        src, dst = data["from"], data["to"]
        assert isinstance(src, list) and isinstance(dst, list)
        return cls(
            Account(str(src[0]), str(src[1]), KIND_OF[str(src[2])]),
            Account(str(dst[0]), str(dst[1]), KIND_OF[str(dst[2])]),
            int(str(data["amount"])),
        )


def capture_transfer_id(payment_id: str) -> str:
    return f"payment:{payment_id}:capture"


def refund_transfer_id(payment_id: str, refund_id: str) -> str:
    return f"payment:{payment_id}:refund:{refund_id}"


def refund_failure_transfer_id(payment_id: str, refund_id: str) -> str:
    """The reversal of a refund's booking, for a refund that failed after it succeeded."""
    return f"{refund_transfer_id(payment_id, refund_id)}:failed"


def dispute_transfer_id(payment_id: str, balance_transaction_id: str) -> str:
    """One transfer per balance transaction of a dispute (its withdrawal, its reinstatement)."""
    return f"payment:{payment_id}:dispute:{balance_transaction_id}"


def clearing(provider: str, currency: str) -> Account:
    return Account(f"provider:{provider}", currency, Kind.PROVIDER_CLEARING)


def provider_fees(provider: str, currency: str) -> Account:
    """What a provider charged the platform (its dispute fees): a clearing-kind account, so it
    may go below zero (an expense: it holds minus the fees paid), never drawing on revenue."""
    return Account(f"provider:{provider}:fees", currency, Kind.PROVIDER_CLEARING)


def revenue(unit: str) -> Account:
    return Account(PLATFORM, unit, Kind.PLATFORM_REVENUE)


def issuance(unit: str) -> Account:
    return Account(PLATFORM, unit, Kind.ISSUANCE)


def escrow(engagement_id: str) -> Account:
    return Account(f"engagement:{engagement_id}", COIN, Kind.ESCROW)


def purpose_of(metadata: dict[str, str]) -> Purpose:
    """A payment's purpose: `purpose`, else `type`; anything else is a fee the platform earns."""
    found = PURPOSE_OF.get(metadata.get(PURPOSE_KEY, "")) or PURPOSE_OF.get(
        metadata.get(TYPE_KEY, "")
    )
    return found or Purpose.FEE


def captures_at_once(metadata: dict[str, str]) -> bool:
    """Coin purchases and direct job payments are sales: their checkout captures at once."""
    return purpose_of(metadata) in (Purpose.COIN_PURCHASE, Purpose.JOB_PAYMENT)


# --- coins ---------------------------------------------------------------------------------


def parse_coin_rates(raw: str) -> dict[str, int]:
    """`USD:100,EUR:110`: coins per one major unit of each currency (ValueError when bad)."""
    rates: dict[str, int] = {}
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        code, sep, value = part.partition(":")
        code = code.strip().upper()
        if not sep or not money.is_cash(code) or not value.strip().isdigit():
            raise ValueError(f"bad coin rate {part!r}: expected CUR:coins, e.g. USD:100")
        if int(value) <= 0:
            raise ValueError(f"coin rate of {code} must be positive")
        rates[code] = int(value)
    return rates


def coins_for(amount_minor: int, currency: str, rates: dict[str, int]) -> int:
    """The coins an amount buys at the configured rate; an amount that would buy a fraction of a
    coin is refused (never rounded: the cash backing and the coins must match exactly)."""
    rate = rates.get(currency)
    if rate is None:
        raise errors.invalid("amount.currency", f"coins are not sold in {currency}")
    scale = 10 ** money.exponent(currency)
    coins, rest = divmod(amount_minor * rate, scale)
    if rest or coins <= 0:
        raise errors.invalid(
            "amount.amount_minor", f"must buy a whole number of coins ({rate} per 1 {currency})"
        )
    return coins


def funding_fee(amount: int, fee_bps: int) -> int:
    """The platform's funding fee of an engagement amount (floor; the escrow takes the rest)."""
    return amount * fee_bps // BPS


# --- the transfers ------------------------------------------------------------------------------


def capture_legs(
    purpose: Purpose,
    *,
    provider: str,
    currency: str,
    captured_minor: int,
    owner_id: str,
    metadata: dict[str, str],
) -> list[Leg]:
    """The legs of `payment:<id>:capture`: the captured cash out of the provider's clearing, and
    for coins the coins issued (and for a job payment, the fee and the escrow) in the same
    transfer, so either all of it is booked or none."""
    cash = clearing(provider, currency)
    if purpose is Purpose.FEE:
        return [Leg(cash, revenue(currency), captured_minor)]
    if purpose is Purpose.MARKETPLACE:
        return []
    coins = int(metadata.get(COINS_KEY, "0") or 0)
    buyer = Account(owner_id, COIN, Kind.USER)
    legs = [
        Leg(cash, issuance(currency), captured_minor),
        Leg(issuance(COIN), buyer, coins),
    ]
    if purpose is Purpose.JOB_PAYMENT:
        fee = int(metadata.get(FEE_COINS_KEY, "0") or 0)
        if fee:
            legs.append(Leg(buyer, revenue(COIN), fee))
        legs.append(Leg(buyer, escrow(metadata[ENGAGEMENT_KEY]), coins - fee))
    return legs


def issues_coins(metadata: dict[str, str]) -> bool:
    """Whether the payment's capture issued coins to its payer (taken back when refunded)."""
    return purpose_of(metadata) in (Purpose.COIN_PURCHASE, Purpose.JOB_PAYMENT)


def coins_to_take_back(metadata: dict[str, str], captured_minor: int, refunded_minor: int) -> int:
    """The coins a refund of `refunded_minor` takes back: the capture's coins in proportion,
    exactly (a refund that would take back a fraction of a coin is refused, never rounded: the
    coins and their cash backing must stay equal)."""
    coins = int(metadata.get(COINS_KEY, "0") or 0)
    if not coins or captured_minor <= 0:
        return 0
    taken, rest = divmod(coins * refunded_minor, captured_minor)
    if rest:
        raise errors.invalid(
            "amount_minor",
            f"must take back a whole number of coins ({coins} coins for {captured_minor})",
        )
    return taken


def coins_refunded_at_provider(
    metadata: dict[str, str], captured_minor: int, refunded_minor: int
) -> int:
    """The coins a refund made at the provider takes back: the capture's coins in proportion,
    rounded down (the cash is gone already, so it cannot be refused as coins_to_take_back does;
    a fraction of a coin stays with the buyer rather than taking more than was paid back)."""
    coins = int(metadata.get(COINS_KEY, "0") or 0)
    if not coins or captured_minor <= 0:
        return 0
    return min(coins, coins * refunded_minor // captured_minor)


def refund_legs(
    purpose: Purpose, *, provider: str, currency: str, refunded_minor: int
) -> list[Leg]:
    """The legs of `payment:<id>:refund:<refund_id>`: the refunded cash back to clearing from
    where the capture put it (revenue, or the cash backing of sold coins). The coins the refund
    takes back move by their own hold (branch `refund:<refund_id>`, held before the provider
    call, posted to coin issuance when the refund succeeded)."""
    cash = clearing(provider, currency)
    if purpose is Purpose.FEE:
        return [Leg(revenue(currency), cash, refunded_minor)]
    if purpose is Purpose.MARKETPLACE:
        return []
    return [Leg(issuance(currency), cash, refunded_minor)]


def refund_failure_legs(
    purpose: Purpose,
    *,
    provider: str,
    currency: str,
    refunded_minor: int,
    coins: int,
    owner_id: str,
) -> list[Leg]:
    """The legs of `payment:<id>:refund:<refund_id>:failed`, for a refund that succeeded and then
    failed at the provider (the money never reached the customer): the refund's booking
    reversed by a balanced entry of its own (never deleted): the cash out of clearing again to
    where the capture put it, and the `coins` the refund had taken back given back to the buyer
    from issuance, in the same transfer (all or nothing)."""
    legs = [
        Leg(leg.target, leg.source, leg.amount)
        for leg in refund_legs(
            purpose, provider=provider, currency=currency, refunded_minor=refunded_minor
        )
    ]
    if legs and coins > 0:
        legs.append(Leg(issuance(COIN), Account(owner_id, COIN, Kind.USER), coins))
    return legs


def dispute_legs(
    purpose: Purpose,
    *,
    provider: str,
    currency: str,
    amount_minor: int,
    fee_minor: int,
    fee_currency: str = "",
) -> list[Leg]:
    """The legs of `payment:<id>:dispute:<balance transaction>`: `amount_minor` < 0 is the
    disputed money the provider withdrew, back to clearing from where the capture put it (as a
    refund's); > 0 is that money reinstated (a won dispute), the other way. `fee_minor` > 0 is the
    provider's dispute fee, taken from the clearing balance into the provider's fees account (an
    expense: revenue stays what was sold minus what was taken back); < 0 a fee given back.
    Marketplace money is jobs' to book: none here (see README "Disputes").

    Every account holds one unit, so nothing is converted: the amount is in the payment's
    `currency` (where the capture booked it), the fee in `fee_currency` (the currency Stripe
    settled it in, its balance transaction's; the payment's when empty), between the provider's
    clearing and fees accounts in that currency, as Stripe's balance does."""
    if purpose is Purpose.MARKETPLACE:
        return []
    legs: list[Leg] = []
    if amount_minor:
        back = refund_legs(purpose, provider=provider, currency=currency, refunded_minor=1)[0]
        leg = Leg(back.source, back.target, -amount_minor)
        legs.append(leg if amount_minor < 0 else Leg(leg.target, leg.source, amount_minor))
    unit = fee_currency or currency
    fees, fee_cash = provider_fees(provider, unit), clearing(provider, unit)
    if fee_minor > 0:
        legs.append(Leg(fees, fee_cash, fee_minor))
    elif fee_minor < 0:
        legs.append(Leg(fee_cash, fees, -fee_minor))
    return legs


def revenue_delta(legs: list[Leg], unit: str) -> int:
    """What the legs add to platform revenue in one unit (negative: taken back)."""
    account = revenue(unit)
    return sum(
        (leg.amount if leg.target == account else 0) - (leg.amount if leg.source == account else 0)
        for leg in legs
    )


# --- the auditor's check ---------------------------------------------------------------------

MISSING = "ledger_booking_missing"
REVENUE_MISMATCH = "ledger_revenue_mismatch"


@dataclass(frozen=True, slots=True)
class ExpectedBooking:
    """A transfer the ledger must hold: money captured or refunded at a provider."""

    transfer_id: str
    subject_id: str  # the payment (or plan purchase)
    provider: str
    currency: str
    amount: int  # captured, or refunded
    purpose: Purpose
    refund: bool  # money taken back (a refund, a dispute's withdrawal)
    what: str = ""  # what moved the money, when not a capture or a refund ("dispute")

    @property
    def revenue(self) -> int:
        """What it adds to platform revenue in its currency (fees: captured, minus refunds and
        disputes' withdrawals, plus their reinstatements)."""
        if self.purpose is not Purpose.FEE:
            return 0
        return -self.amount if self.refund else self.amount


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    subject_id: str
    detail: str


def audit_bookings(
    expected: list[ExpectedBooking],
    on_clearing: set[str],
    revenue_entries: dict[str, dict[str, int]],
) -> list[Finding]:
    """Every expected transfer is on its provider's clearing account, and per currency the
    platform revenue the payments-booked transfers carry equals captured fees minus refunds.

    `on_clearing`: transfer ids with an entry on a provider clearing account; `revenue_entries`:
    per currency, the revenue account's net amount per transfer id."""
    findings = [
        Finding(
            MISSING,
            e.transfer_id,
            f"{e.what or ('refunded' if e.refund else 'captured')} {e.amount} {e.currency}"
            f" at {e.provider}"
            f" ({e.purpose.value}, {e.subject_id}): no transfer on the ledger",
        )
        for e in expected
        if e.transfer_id not in on_clearing
    ]
    expected_revenue: dict[str, int] = {}
    booked_revenue: dict[str, int] = {}
    for e in expected:
        if e.purpose is not Purpose.FEE:
            continue
        expected_revenue[e.currency] = expected_revenue.get(e.currency, 0) + e.revenue
        booked = revenue_entries.get(e.currency, {}).get(e.transfer_id, 0)
        booked_revenue[e.currency] = booked_revenue.get(e.currency, 0) + booked
    findings += [
        Finding(
            REVENUE_MISMATCH,
            currency,
            f"platform revenue booked {booked_revenue[currency]} {currency},"
            f" captured fees minus refunds {want}",
        )
        for currency, want in sorted(expected_revenue.items())
        if booked_revenue[currency] != want
    ]
    return findings
