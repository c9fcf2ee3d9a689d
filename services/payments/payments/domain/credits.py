"""The ledger bookings payments owes the wallet (ESC-1 "every cent", CR-2): the durable row written
in the same local transaction as a settlement (an outbox of transfers) and retried until the
wallet acknowledges it. A plan purchase issues its credits and books its money (revoked on refund);
every other captured payment and refund books its money through the provider's clearing account
(legs in payments.domain.ledger). The table keeps issue 10's name, credit_grants."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from payments.domain import ledger
from payments.domain.disputes import DisputeMoney
from payments.domain.ledger import Account, Kind, Leg
from payments.domain.model import Payment
from payments.domain.refunds import Refund
from payments.domain.transactions import Transaction, UserType

JOB_CREDIT = "JOB_CREDIT"
CANDIDATE_CREDIT = "CANDIDATE_CREDIT"
CREDIT_UNITS = (JOB_CREDIT, CANDIDATE_CREDIT)

# Metadata keys of a transaction: the credits its plan granted when it was bought (a snapshot,
# so changing the catalogue later never changes what an earlier purchase issues or revokes).
JOB_CREDITS_KEY = "job_credits"
CANDIDATE_CREDITS_KEY = "candidate_credits"
# The money of a purchase refunded in part at its provider and booked so far (each refund by its
# own PURCHASE_REFUND booking): a later refund of the rest, or the admin's, books only the rest.
REFUNDED_KEY = "refunded_minor"
# The money of a purchase its card disputes took back and booked so far, net (withdrawn or held,
# minus reinstated or released; each movement by its own DISPUTE booking): a full refund or
# revocation afterwards books only what neither they nor refunds in part took back.
DISPUTED_KEY = "disputed_minor"


class GrantKind(enum.StrEnum):
    # The purchase was paid: its money from provider clearing to platform revenue, its credits
    # from ISSUANCE to the user (ESC-1: every captured subscription is booked on the ledger).
    ISSUE = "issue"
    # The purchase was refunded: the money back to clearing, its unused credits back to ISSUANCE.
    REVOKE = "revoke"
    # A refund of part of a purchase's money made at its provider: the money only, back to
    # clearing out of revenue; the credits stay (README "Refunds made at the provider"):
    # `payment:<transaction id>:refund:<provider refund id>`; `refund_id` holds the latter.
    PURCHASE_REFUND = "purchase_refund"
    # A captured payment (not marketplace money): `payment:<id>:capture`.
    CAPTURE = "capture"
    # A succeeded refund of such a payment: `payment:<id>:refund:<refund_id>`.
    REFUND = "refund"
    # The reversal of a REFUND whose refund failed at the provider after it succeeded:
    # `payment:<id>:refund:<refund_id>:failed` (its legs the refund's, reversed, and the coins
    # the refund took back given back).
    REFUND_FAILED = "refund_failed"
    # A balance transaction of a dispute of such a payment, or of a plan purchase (money
    # withdrawn or reinstated, and the dispute fee): `payment:<id>:dispute:<balance
    # transaction>`, `<id>` the payment's or the purchase's (`transaction_id` set, no
    # `payment_id`); `refund_id` holds the balance transaction's id.
    DISPUTE = "dispute"


# The refund id of a purchase's one full refund (RefundTransaction), in its transfer id.
FULL_REFUND = "full"


class GrantStatus(enum.StrEnum):
    PENDING = "pending"  # not acknowledged by the wallet yet
    DONE = "done"


# Members by their stored text, for reading rows (a dict look-up, not the enum's call; issue 13).
GRANT_KIND_OF = {k.value: k for k in GrantKind}
GRANT_STATUS_OF = {s.value: s for s in GrantStatus}


def credits_of(txn: Transaction) -> dict[str, int]:
    """The credits a purchase grants, per unit (units with none left out)."""
    granted = {
        JOB_CREDIT: int(txn.metadata.get(JOB_CREDITS_KEY, "0") or 0),
        CANDIDATE_CREDIT: int(txn.metadata.get(CANDIDATE_CREDITS_KEY, "0") or 0),
    }
    return {unit: amount for unit, amount in granted.items() if amount > 0}


def refunded_in_part(txn: Transaction) -> int:
    """The purchase's money refunded in part at its provider and booked so far."""
    return int(txn.metadata.get(REFUNDED_KEY, "0") or 0)


def disputed(txn: Transaction) -> int:
    """The purchase's money its disputes took back and booked so far, net."""
    return int(txn.metadata.get(DISPUTED_KEY, "0") or 0)


def taken_back(txn: Transaction) -> int:
    """The purchase's money already back with the buyer and booked: its refunds in part at the
    provider and its disputes' net withdrawals. A full refund (the admin's, or the rest refunded
    at the provider) refunds and books only the price minus this."""
    return refunded_in_part(txn) + disputed(txn)


def _booked(txn: Transaction, refunded_before: int = 0) -> dict[str, int]:
    money = txn.amount_minor - refunded_before
    return {txn.currency: money, **credits_of(txn)} if money > 0 else credits_of(txn)


@dataclass(slots=True)
class CreditGrant:
    """One ledger movement a settled purchase owes: issuing its credits, or revoking them.

    `transfer_id` is the wallet's idempotency key, derived from the transaction, so a retry after
    a crash or a lost answer can never move the credits twice. For a revocation, `amounts` is
    planned once from what is still unused and kept, so every retry sends the same transfer."""

    id: str
    kind: GrantKind
    transaction_id: str  # the purchase's ("" for a payment's booking)
    user_type: UserType | None
    user_id: str
    granted: dict[str, int]  # what the purchase booked, per unit (its currency and credit units)
    amounts: dict[str, int] | None  # what this grant moves (None: a revocation not planned yet)
    status: GrantStatus
    attempts: int
    next_attempt_at: datetime
    created_at: datetime
    done_at: datetime | None = None
    last_error: str = ""
    provider: str = ""  # whose clearing account the money goes through
    payment_id: str = ""  # a payment's booking: the payment ...
    refund_id: str = ""  # ... and for a refund, the refund
    legs: list[Leg] | None = None  # a payment's booking: its legs, fixed when recorded

    @property
    def transfer_id(self) -> str:
        if self.kind is GrantKind.ISSUE:
            return ledger.capture_transfer_id(self.transaction_id)
        if self.kind is GrantKind.REVOKE:
            return ledger.refund_transfer_id(self.transaction_id, FULL_REFUND)
        if self.kind is GrantKind.PURCHASE_REFUND:
            return ledger.refund_transfer_id(self.transaction_id, self.refund_id)
        if self.kind is GrantKind.CAPTURE:
            return ledger.capture_transfer_id(self.payment_id)
        if self.kind is GrantKind.DISPUTE:
            subject = self.payment_id or self.transaction_id  # a payment's, or a purchase's
            return ledger.dispute_transfer_id(subject, self.refund_id)
        if self.kind is GrantKind.REFUND_FAILED:
            return ledger.refund_failure_transfer_id(self.payment_id, self.refund_id)
        return ledger.refund_transfer_id(self.payment_id, self.refund_id)

    @property
    def of_payment(self) -> bool:
        return self.kind in (
            GrantKind.CAPTURE,
            GrantKind.REFUND,
            GrantKind.REFUND_FAILED,
            GrantKind.DISPUTE,
        )

    def legs_for(self, amounts: dict[str, int]) -> list[Leg]:
        """The transfer's legs: a payment's as recorded; a purchase's money between the provider's
        clearing and revenue, its credits between ISSUANCE and the user (reversed to revoke)."""
        if self.legs is not None:
            return list(self.legs)
        legs: list[Leg] = []
        for unit, amount in sorted(amounts.items()):
            if amount <= 0:
                continue
            if unit in CREDIT_UNITS:
                pair = (ledger.issuance(unit), Account(self.user_id, unit, Kind.USER))
            else:
                pair = (ledger.clearing(self.provider, unit), ledger.revenue(unit))
            source, target = pair if self.kind is GrantKind.ISSUE else pair[::-1]
            legs.append(Leg(source, target, amount))
        return legs

    @property
    def used(self) -> dict[str, int]:
        """For a done revocation: the credits of the purchase already spent (kept, reported)."""
        if self.kind is not GrantKind.REVOKE or self.amounts is None:
            return {}
        return {
            unit: n - self.amounts.get(unit, 0)
            for unit, n in self.granted.items()
            if unit in CREDIT_UNITS
        }

    @classmethod
    def issue(cls, txn: Transaction, now: datetime) -> CreditGrant:
        """What a paid purchase owes the ledger: its money booked and its credits issued."""
        granted = _booked(txn)
        return cls._of_transaction(GrantKind.ISSUE, txn, txn.id, granted, dict(granted), now)

    @classmethod
    def revoke(cls, txn: Transaction, now: datetime) -> CreditGrant:
        """What a refunded purchase owes the ledger; its credits are planned later from what is
        still unused. Its money: what is left after the refunds in part and the disputes'
        withdrawals booked before it (none after a dispute lost in full: credits only)."""
        granted = _booked(txn, taken_back(txn))
        return cls._of_transaction(GrantKind.REVOKE, txn, txn.id, granted, None, now)

    @classmethod
    def purchase_refund(
        cls, txn: Transaction, refund_id: str, amount_minor: int, now: datetime
    ) -> CreditGrant:
        """What a refund of part of a purchase's money made at its provider owes the ledger:
        that money back to the provider's clearing out of revenue (the credits stay)."""
        booked = {txn.currency: amount_minor}
        grant = cls._of_transaction(
            GrantKind.PURCHASE_REFUND, txn, refund_id, booked, dict(booked), now
        )
        grant.refund_id = refund_id
        cash = ledger.clearing(txn.provider, txn.currency)
        grant.legs = [Leg(ledger.revenue(txn.currency), cash, amount_minor)]
        return grant

    @classmethod
    def _of_transaction(
        cls,
        kind: GrantKind,
        txn: Transaction,
        our_id: str,
        granted: dict[str, int],
        amounts: dict[str, int] | None,
        now: datetime,
    ) -> CreditGrant:
        return cls(
            id=f"{kind.value}:{our_id}",
            kind=kind,
            transaction_id=txn.id,
            user_type=txn.user_type,
            user_id=txn.user_id,
            granted=granted,
            amounts=amounts,
            status=GrantStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            provider=txn.provider,
        )

    @classmethod
    def capture(cls, payment: Payment, now: datetime) -> CreditGrant | None:
        """What a captured payment owes the ledger (None: marketplace money, booked by jobs)."""
        purpose = ledger.purpose_of(payment.metadata)
        legs = ledger.capture_legs(
            purpose,
            provider=payment.provider,
            currency=payment.currency,
            captured_minor=payment.captured_minor,
            owner_id=payment.owner_id,
            metadata=payment.metadata,
        )
        return cls._of_payment(GrantKind.CAPTURE, payment, "", payment.captured_minor, legs, now)

    @classmethod
    def refund(cls, payment: Payment, refund: Refund, now: datetime) -> CreditGrant | None:
        """What a succeeded refund owes the ledger (None: marketplace money, booked by jobs)."""
        purpose = ledger.purpose_of(payment.metadata)
        legs = ledger.refund_legs(
            purpose,
            provider=payment.provider,
            currency=payment.currency,
            refunded_minor=refund.amount_minor,
        )
        return cls._of_payment(GrantKind.REFUND, payment, refund.id, refund.amount_minor, legs, now)

    @classmethod
    def refund_failed(
        cls, payment: Payment, refund: Refund, coins: int, now: datetime
    ) -> CreditGrant | None:
        """What a refund that failed after it succeeded owes the ledger: its booking reversed,
        with the `coins` it had taken back (None: marketplace money, jobs' to book)."""
        legs = ledger.refund_failure_legs(
            ledger.purpose_of(payment.metadata),
            provider=payment.provider,
            currency=payment.currency,
            refunded_minor=refund.amount_minor,
            coins=coins,
            owner_id=payment.owner_id,
        )
        return cls._of_payment(
            GrantKind.REFUND_FAILED, payment, refund.id, refund.amount_minor, legs, now
        )

    @classmethod
    def dispute(
        cls, payment: Payment, money: DisputeMoney, disputed_minor: int, now: datetime
    ) -> CreditGrant | None:
        """What one balance transaction of a dispute owes the ledger (None: nothing, or
        marketplace money, jobs' to book). A balance transaction in another currency than the
        payment's (the account settles in it: Stripe converted it, `exchange_rate`) is never
        converted here, each amount staying exact in its own unit: the disputed money moves in
        the payment's currency, where the capture booked it (`disputed_minor`, the dispute's
        amount), and the dispute fee in the currency Stripe charged it in, between the
        provider's clearing and fees accounts of that currency."""
        purpose = ledger.purpose_of(payment.metadata)
        legs = _dispute_legs(purpose, payment.provider, payment.currency, money, disputed_minor)
        grant = cls._of_payment(
            GrantKind.DISPUTE, payment, money.id, sum(leg.amount for leg in legs), legs, now
        )
        return _per_unit(grant, legs)

    @classmethod
    def purchase_dispute(
        cls, txn: Transaction, money: DisputeMoney, disputed_minor: int, now: datetime
    ) -> CreditGrant | None:
        """What one money movement of a dispute of a plan purchase owes the ledger: as a fee
        payment's (the purchase's capture put its money in revenue, ISSUE), the disputed money
        between revenue and the provider's clearing, the fee into the provider's fees account;
        `payment:<transaction id>:dispute:<movement>`. The credits move only if the purchase
        becomes REFUNDED (its REVOKE), never by this booking. None: nothing moves."""
        legs = _dispute_legs(ledger.Purpose.FEE, txn.provider, txn.currency, money, disputed_minor)
        if not legs:
            return None
        # Its id the movement's, as a payment's dispute booking: one booking per movement.
        grant = cls._of_transaction(GrantKind.DISPUTE, txn, money.id, {}, {}, now)
        grant.refund_id, grant.legs = money.id, legs
        return _per_unit(grant, legs)

    def dispute_booked(self, of: DisputeMoney) -> tuple[int, int] | None:
        """The (amount, fee) this grant booked for the running total `of` (its first booking
        `dispute:<id>`, or an adjustment `dispute:<id>:<n>`): the amount < 0 taken back, > 0
        given back, as the movement's; the fee > 0 charged, < 0 given back. None if the grant
        is not one of its bookings."""
        # A payment's dispute booking, or a plan purchase's (transaction_id, no payment_id).
        if self.kind is not GrantKind.DISPUTE or not (self.payment_id or self.transaction_id):
            return None
        rest = self.refund_id.removeprefix(of.id)
        if rest == self.refund_id or (rest and not (rest[:1] == ":" and rest[1:].isdigit())):
            return None
        fees = ledger.provider_fees(self.provider, of.currency)
        amount = fee = 0
        for leg in self.legs or []:
            if fees in (leg.source, leg.target):
                fee += leg.amount if leg.source == fees else -leg.amount
            else:  # the disputed money: to clearing when taken back, from it when given back
                clearing = leg.target.kind is ledger.Kind.PROVIDER_CLEARING
                amount += -leg.amount if clearing else leg.amount
        return amount, fee

    @classmethod
    def _of_payment(
        cls,
        kind: GrantKind,
        payment: Payment,
        refund_id: str,
        amount: int,
        legs: list[Leg],
        now: datetime,
    ) -> CreditGrant | None:
        if not legs or amount <= 0:
            return None
        booked = {payment.currency: amount}
        return cls(
            id=f"{kind}:{refund_id or payment.id}",
            kind=kind,
            transaction_id="",
            user_type=None,
            user_id=payment.owner_id,
            granted=booked,
            amounts=dict(booked),
            status=GrantStatus.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
            provider=payment.provider,
            payment_id=payment.id,
            refund_id=refund_id,
            legs=legs,
        )

    def plan_revocation(self, available: dict[str, int]) -> dict[str, int]:
        """Take back what is unused of this purchase: at most what it granted, at most what the
        user still has (the rest was spent and stays spent); the money goes back in full."""
        self.amounts = {
            unit: n if unit not in CREDIT_UNITS else max(0, min(n, available.get(unit, 0)))
            for unit, n in self.granted.items()
        }
        return self.amounts

    def done(self, now: datetime) -> None:
        self.status = GrantStatus.DONE
        self.done_at = now
        self.last_error = ""

    def retry_later(self, now: datetime, delay_seconds: float, error: str) -> None:
        self.attempts += 1
        self.next_attempt_at = now + timedelta(seconds=delay_seconds)
        self.last_error = error[:500]


def _dispute_legs(
    purpose: ledger.Purpose,
    provider: str,
    currency: str,
    money: DisputeMoney,
    disputed_minor: int,
) -> list[Leg]:
    """The legs of one dispute money movement of a payment or purchase in `currency`: the amount
    in that currency (one settled in another counts as the dispute's amount, exact, never
    converted), the fee in the currency the provider charged it in."""
    same = money.currency == currency or not money.currency
    amount = money.amount_minor
    if not same and amount:
        amount = disputed_minor if amount > 0 else -disputed_minor
    return ledger.dispute_legs(
        purpose,
        provider=provider,
        currency=currency,
        amount_minor=amount,
        fee_minor=money.fee_minor,
        fee_currency=currency if same else money.currency,
    )


def _per_unit(grant: CreditGrant | None, legs: list[Leg]) -> CreditGrant | None:
    """A dispute booking's amounts per unit, never summed across units."""
    if grant is not None:
        moved: dict[str, int] = {}
        for leg in legs:
            moved[leg.source.unit] = moved.get(leg.source.unit, 0) + leg.amount
        grant.granted, grant.amounts = moved, dict(moved)
    return grant
