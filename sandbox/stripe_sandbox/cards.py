"""Stripe's test payment methods and test card numbers, and the outcome each one produces."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Outcome(enum.Enum):
    """What confirming a PaymentIntent with a payment method does."""

    SUCCEED = "succeed"
    DECLINE = "decline"
    AUTHENTICATE = "authenticate"  # 3-D Secure: the intent waits in requires_action
    SETTLE_LATER = "settle_later"  # bank debit: the intent waits in processing


@dataclass(frozen=True)
class Decline:
    """A card error as Stripe reports it (`code`, `decline_code`, `message`, `param`)."""

    code: str
    decline_code: str | None
    message: str
    param: str | None = None


GENERIC_DECLINE = Decline("card_declined", "generic_decline", "Your card was declined.")
INSUFFICIENT_FUNDS = Decline(
    "card_declined", "insufficient_funds", "Your card has insufficient funds."
)
LOST_CARD = Decline("card_declined", "lost_card", "Your card was declined.")
STOLEN_CARD = Decline("card_declined", "stolen_card", "Your card was declined.")
EXPIRED_CARD = Decline("expired_card", "expired_card", "Your card has expired.", "exp_month")
INCORRECT_CVC = Decline(
    "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect.", "cvc"
)
PROCESSING_ERROR = Decline(
    "processing_error",
    "processing_error",
    "An error occurred while processing your card. Try again in a little bit.",
)
INCORRECT_NUMBER = Decline("incorrect_number", None, "Your card number is incorrect.", "number")
LIVE_CARD_IN_TEST_MODE = Decline(
    "card_declined",
    "test_mode_live_card",
    "Your card was declined. Your request was in test mode, but used a non test (live) card. "
    "For a list of valid test cards, visit: https://stripe.com/docs/testing.",
)
AUTHENTICATION_FAILED = Decline(
    "payment_intent_authentication_failure",
    None,
    "The provided PaymentMethod has failed authentication. You can provide payment_method_data "
    "or a new PaymentMethod to attempt to fulfill this PaymentIntent again.",
)
BANK_DEBIT_FAILED = Decline(
    "payment_method_provider_decline",
    "insufficient_funds",
    "The customer's bank account has insufficient funds to cover this payment.",
)


@dataclass(frozen=True)
class TestMethod:
    """A payment method the sandbox knows: its wire details and its outcome."""

    type: str  # "card" | "us_bank_account"
    brand: str
    last4: str
    outcome: Outcome
    decline: Decline | None = None
    funding: str = "credit"
    # Disputed once captured (resources/disputes.py): the cardholder's reason, and whether it is
    # only an inquiry ("" for a card that is never disputed).
    dispute_reason: str = ""
    inquiry: bool = False
    # Its refunds succeed, then fail asynchronously (resources/refunds.py), as test mode's
    # 4000 0000 0000 5126 (`pm_card_refundFail`).
    refund_fails: bool = False


def _card(brand: str, last4: str, decline: Decline | None = None) -> TestMethod:
    return TestMethod(
        "card", brand, last4, Outcome.DECLINE if decline else Outcome.SUCCEED, decline
    )


_THREE_DS = TestMethod("card", "visa", "3220", Outcome.AUTHENTICATE)
_DISPUTED = TestMethod("card", "visa", "0259", Outcome.SUCCEED, dispute_reason="fraudulent")
_NOT_RECEIVED = TestMethod(
    "card", "visa", "2685", Outcome.SUCCEED, dispute_reason="product_not_received"
)
_INQUIRY = TestMethod(
    "card", "visa", "1976", Outcome.SUCCEED, dispute_reason="fraudulent", inquiry=True
)
_REFUND_FAILS = TestMethod("card", "visa", "5126", Outcome.SUCCEED, refund_fails=True)
_BANK = TestMethod("us_bank_account", "STRIPE TEST BANK", "6789", Outcome.SETTLE_LATER)

# Stripe's test PaymentMethod tokens (https://docs.stripe.com/testing), with their outcomes.
TEST_PAYMENT_METHODS: dict[str, TestMethod] = {
    "pm_card_visa": _card("visa", "4242"),
    "pm_card_visa_debit": TestMethod("card", "visa", "5556", Outcome.SUCCEED, funding="debit"),
    "pm_card_mastercard": _card("mastercard", "4444"),
    "pm_card_amex": _card("amex", "8431"),
    "pm_card_chargeDeclined": _card("visa", "0002", GENERIC_DECLINE),
    "pm_card_visa_chargeDeclined": _card("visa", "0002", GENERIC_DECLINE),
    "pm_card_chargeDeclinedInsufficientFunds": _card("visa", "9995", INSUFFICIENT_FUNDS),
    "pm_card_visa_chargeDeclinedInsufficientFunds": _card("visa", "9995", INSUFFICIENT_FUNDS),
    "pm_card_chargeDeclinedLostCard": _card("visa", "9987", LOST_CARD),
    "pm_card_visa_chargeDeclinedLostCard": _card("visa", "9987", LOST_CARD),
    "pm_card_chargeDeclinedStolenCard": _card("visa", "9979", STOLEN_CARD),
    "pm_card_visa_chargeDeclinedStolenCard": _card("visa", "9979", STOLEN_CARD),
    "pm_card_chargeDeclinedProcessingError": _card("visa", "0119", PROCESSING_ERROR),
    "pm_card_chargeDeclinedExpiredCard": _card("visa", "0069", EXPIRED_CARD),
    "pm_card_chargeDeclinedIncorrectCvc": _card("visa", "0127", INCORRECT_CVC),
    "pm_card_threeDSecure2Required": _THREE_DS,
    "pm_card_authenticationRequired": TestMethod("card", "visa", "3184", Outcome.AUTHENTICATE),
    "pm_card_createDispute": _DISPUTED,
    "pm_card_createDisputeProductNotReceived": _NOT_RECEIVED,
    "pm_card_createDisputeInquiry": _INQUIRY,
    "pm_card_refundFail": _REFUND_FAILS,
    "pm_usBankAccount": _BANK,
    "pm_bank_transfer": _BANK,
}

# Test card numbers typed on the hosted Checkout page.
TEST_CARD_NUMBERS: dict[str, TestMethod] = {
    "4242424242424242": _card("visa", "4242"),
    "4000056655665556": TestMethod("card", "visa", "5556", Outcome.SUCCEED, funding="debit"),
    "5555555555554444": _card("mastercard", "4444"),
    "378282246310005": _card("amex", "0005"),
    "4000000000000002": _card("visa", "0002", GENERIC_DECLINE),
    "4000000000009995": _card("visa", "9995", INSUFFICIENT_FUNDS),
    "4000000000009987": _card("visa", "9987", LOST_CARD),
    "4000000000009979": _card("visa", "9979", STOLEN_CARD),
    "4000000000000119": _card("visa", "0119", PROCESSING_ERROR),
    "4000000000000069": _card("visa", "0069", EXPIRED_CARD),
    "4000000000000127": _card("visa", "0127", INCORRECT_CVC),
    "4000000000003220": _THREE_DS,
    "4000000000000259": _DISPUTED,
    "4000000000002685": _NOT_RECEIVED,
    "4000000000001976": _INQUIRY,
    "4000000000005126": _REFUND_FAILS,
    "4000002760003184": TestMethod("card", "visa", "3184", Outcome.AUTHENTICATE),
    "4000002500003155": TestMethod("card", "visa", "3155", Outcome.AUTHENTICATE),
}


def luhn_valid(number: str) -> bool:
    """The card-number checksum every real and test card number passes."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for index, char in enumerate(reversed(number)):
        digit = int(char)
        if index % 2 == 1:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def brand_of(number: str) -> str:
    """The card brand a number belongs to, by its prefix."""
    if number.startswith("4"):
        return "visa"
    if number[:2] in {"51", "52", "53", "54", "55"} or (
        number[:4].isdigit() and (2221 <= int(number[:4]) <= 2720)
    ):
        return "mastercard"
    if number[:2] in {"34", "37"}:
        return "amex"
    if number.startswith("6011") or number.startswith("65"):
        return "discover"
    return "unknown"


def method_for_card_number(raw: str) -> TestMethod:
    """The outcome of paying with a typed card number (spaces and dashes allowed)."""
    number = "".join(ch for ch in raw if ch not in " -")
    known = TEST_CARD_NUMBERS.get(number)
    if known is not None:
        return known
    last4 = number[-4:] if len(number) >= 4 else number
    if not luhn_valid(number):
        return TestMethod("card", brand_of(number), last4, Outcome.DECLINE, INCORRECT_NUMBER)
    # A valid number that is not a test card: Stripe's test mode declines live cards.
    return TestMethod("card", brand_of(number), last4, Outcome.DECLINE, LIVE_CARD_IN_TEST_MODE)
