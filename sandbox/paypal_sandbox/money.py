"""PayPal amounts: `{"currency_code": "USD", "value": "10.00"}` on the wire, integer minor units
inside, refusing more decimals than the currency has."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from paypal_sandbox.errors import PayPalError, invalid

# Currencies PayPal does not allow decimals for.
ZERO_DECIMAL = frozenset({"HUF", "JPY", "TWD"})


def exponent(currency: str) -> int:
    return 0 if currency.upper() in ZERO_DECIMAL else 2


def parse_amount(amount: Any, field: str) -> tuple[int, str]:
    """(minor units, currency) of an amount object; 400/422 for a malformed one."""
    if not isinstance(amount, dict):
        raise invalid(
            field, "MISSING_REQUIRED_PARAMETER", "A required field / parameter is missing."
        )
    currency = amount.get("currency_code")
    value = amount.get("value")
    if not isinstance(currency, str) or len(currency) != 3:
        raise invalid(
            f"{field}/currency_code",
            "MISSING_REQUIRED_PARAMETER",
            "A required field / parameter is missing.",
        )
    if not isinstance(value, str):
        raise invalid(
            f"{field}/value",
            "MISSING_REQUIRED_PARAMETER",
            "A required field / parameter is missing.",
        )
    try:
        number = Decimal(value)
    except InvalidOperation:
        raise invalid(
            f"{field}/value",
            "INVALID_PARAMETER_SYNTAX",
            "The value of a field does not conform to the expected format.",
            value,
        ) from None
    places = exponent(currency)
    minor = number * (10**places)
    if minor != minor.to_integral_value():
        raise PayPalError(
            422,
            "DECIMAL_PRECISION",
            "If the currency supports decimals, only two decimal place precision is supported.",
            field=f"{field}/value",
            value=value,
        )
    if minor <= 0:
        raise PayPalError(
            422,
            "AMOUNT_MUST_BE_POSITIVE",
            "Amount must be greater than zero.",
            field=f"{field}/value",
            value=value,
        )
    return int(minor), currency.upper()


def amount(minor: int, currency: str) -> dict[str, str]:
    """The wire amount object for `minor` units."""
    places = exponent(currency)
    value = f"{Decimal(minor).scaleb(-places):.{places}f}"
    return {"currency_code": currency, "value": value}


def fee(minor: int) -> int:
    """A sandbox processing fee (3.49% + 49 minor units, PayPal's US checkout rate)."""
    return min(minor, round(minor * 0.0349) + 49)
