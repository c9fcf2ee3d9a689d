"""Money rules shared by every service: units, minor-unit exponents, validation (standard library only).

Amounts are always integers in the unit's minor unit; this module never touches floats.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hirepay_platform.errors import ValidationError

# Non-cash units live on their own ledgers; one unit is one coin or one credit.
NON_CASH_UNITS: frozenset[str] = frozenset({"COIN", "JOB_CREDIT", "CANDIDATE_CREDIT"})

# ISO 4217 minor-unit exponents; currencies not listed here have exponent 2.
_EXPONENTS: dict[str, int] = {
    "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3,
    "BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
    "PYG": 0, "RWF": 0, "UGX": 0, "UYI": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
}  # fmt: skip

# The ISO 4217 codes Hirepay accepts (active codes in common commercial use).
ISO_CURRENCIES: frozenset[str] = frozenset(
    [
        "AED",
        "AFN",
        "ALL",
        "AMD",
        "ANG",
        "AOA",
        "ARS",
        "AUD",
        "AWG",
        "AZN",
        "BAM",
        "BBD",
        "BDT",
        "BGN",
        "BHD",
        "BIF",
        "BMD",
        "BND",
        "BOB",
        "BRL",
        "BSD",
        "BTN",
        "BWP",
        "BYN",
        "BZD",
        "CAD",
        "CDF",
        "CHF",
        "CLP",
        "CNY",
        "COP",
        "CRC",
        "CUP",
        "CVE",
        "CZK",
        "DJF",
        "DKK",
        "DOP",
        "DZD",
        "EGP",
        "ERN",
        "ETB",
        "EUR",
        "FJD",
        "FKP",
        "GBP",
        "GEL",
        "GHS",
        "GIP",
        "GMD",
        "GNF",
        "GTQ",
        "GYD",
        "HKD",
        "HNL",
        "HTG",
        "HUF",
        "IDR",
        "ILS",
        "INR",
        "IQD",
        "IRR",
        "ISK",
        "JMD",
        "JOD",
        "JPY",
        "KES",
        "KGS",
        "KHR",
        "KMF",
        "KPW",
        "KRW",
        "KWD",
        "KYD",
        "KZT",
        "LAK",
        "LBP",
        "LKR",
        "LRD",
        "LSL",
        "LYD",
        "MAD",
        "MDL",
        "MGA",
        "MKD",
        "MMK",
        "MNT",
        "MOP",
        "MRU",
        "MUR",
        "MVR",
        "MWK",
        "MXN",
        "MYR",
        "MZN",
        "NAD",
        "NGN",
        "NIO",
        "NOK",
        "NPR",
        "NZD",
        "OMR",
        "PAB",
        "PEN",
        "PGK",
        "PHP",
        "PKR",
        "PLN",
        "PYG",
        "QAR",
        "RON",
        "RSD",
        "RUB",
        "RWF",
        "SAR",
        "SBD",
        "SCR",
        "SDG",
        "SEK",
        "SGD",
        "SHP",
        "SLE",
        "SOS",
        "SRD",
        "SSP",
        "STN",
        "SYP",
        "SZL",
        "THB",
        "TJS",
        "TMT",
        "TND",
        "TOP",
        "TRY",
        "TTD",
        "TWD",
        "TZS",
        "UAH",
        "UGX",
        "USD",
        "UYU",
        "UZS",
        "VES",
        "VND",
        "VUV",
        "WST",
        "XAF",
        "XCD",
        "XOF",
        "XPF",
        "YER",
        "ZAR",
        "ZMW",
        "ZWL",
    ]
)

_CODE = re.compile(r"[A-Z]{3}")
# Keep amounts well inside int64 and PostgreSQL bigint, with room for sums.
MAX_AMOUNT_MINOR = 10**15


def is_cash(unit: str) -> bool:
    """True for ISO 4217 currencies, False for coins and credits."""
    return unit in ISO_CURRENCIES


def exponent(unit: str) -> int:
    """Number of minor-unit digits of a unit (USD 2, JPY 0, KWD 3, coins and credits 0)."""
    if unit in NON_CASH_UNITS:
        return 0
    return _EXPONENTS.get(unit, 2)


def validate_unit(unit: str, *, field: str = "currency", cash_only: bool = False) -> str:
    """Return the unit if it is a known ISO 4217 code (or non-cash unit), else raise."""
    if unit in NON_CASH_UNITS and not cash_only:
        return unit
    if not _CODE.fullmatch(unit or "") or unit not in ISO_CURRENCIES:
        allowed = (
            "an ISO 4217 code"
            if cash_only
            else "an ISO 4217 code, COIN, JOB_CREDIT or CANDIDATE_CREDIT"
        )
        raise ValidationError(f"{field} must be {allowed}", fields={field: "unknown currency"})
    return unit


def validate_amount(
    amount_minor: int, *, field: str = "amount_minor", allow_zero: bool = False
) -> int:
    """Return the amount if it is a positive integer within bounds, else raise."""
    if isinstance(amount_minor, bool) or not isinstance(amount_minor, int):
        raise ValidationError(f"{field} must be an integer", fields={field: "not an integer"})
    if amount_minor < 0 or (amount_minor == 0 and not allow_zero):
        raise ValidationError(f"{field} must be positive", fields={field: "must be positive"})
    if amount_minor > MAX_AMOUNT_MINOR:
        raise ValidationError(f"{field} is too large", fields={field: "too large"})
    return amount_minor


@dataclass(frozen=True, slots=True)
class Money:
    """An exact amount in a unit's minor unit."""

    amount_minor: int
    currency: str

    def __post_init__(self) -> None:
        if isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int):
            raise ValidationError(
                "amount must be an integer", fields={"amount_minor": "not an integer"}
            )

    def to_decimal_string(self) -> str:
        """Human form with the unit's exponent, e.g. 3000 USD -> '30.00' (for display only)."""
        exp = exponent(self.currency)
        sign = "-" if self.amount_minor < 0 else ""
        whole, frac = divmod(abs(self.amount_minor), 10**exp)
        return f"{sign}{whole}.{frac:0{exp}d}" if exp else f"{sign}{whole}"
