"""The plan catalogue (CR-1, API-1): what each audience can buy, its price per currency, its period
and the credits it grants; the defaults and the JSON format that overrides them (PLANS_FILE)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from hirepay_platform import money
from payments.domain import errors
from payments.domain.transactions import UserType


@dataclass(frozen=True, slots=True)
class Plan:
    """A plan one user type can buy: a price per currency, a period and the credits it grants."""

    code: str
    user_type: UserType
    name: str
    prices: dict[str, int]  # currency -> amount in minor units; the first is the default
    period_days: int
    job_credits: int = 0  # JOB_CREDIT issued when a purchase is paid (CR-2)
    candidate_credits: int = 0  # CANDIDATE_CREDIT issued when a purchase is paid

    @property
    def free(self) -> bool:
        """A free plan is everyone's starting point: listed, never bought (nothing to pay)."""
        return all(amount == 0 for amount in self.prices.values())

    @property
    def default_currency(self) -> str:
        return next(iter(self.prices))

    def price(self, currency: str) -> tuple[int, str]:
        """(amount_minor, currency) for a currency ('' = the plan's default)."""
        cur = currency or self.default_currency
        if cur not in self.prices:
            raise errors.PlanNotFound(self.code, self.user_type.value, cur)
        return self.prices[cur], cur


# Seed 003's recruiter plans (one job post = 500 job credits) and seed 004's MONTHLY premium.
# Prices are configuration (PLANS_FILE); these are the development defaults.
DEFAULT_PLANS: tuple[Plan, ...] = (
    Plan("FREE_LAUNCHPAD", UserType.COMPANY, "Free Launchpad", {"USD": 0, "EUR": 0, "INR": 0}, 30),
    Plan(
        "SWIFT_HIRE",
        UserType.COMPANY,
        "Swift Hire (Standard)",
        {"USD": 4900, "EUR": 4500, "INR": 399900},
        30,
        job_credits=2_500,
        candidate_credits=50,
    ),
    Plan(
        "GROWTH_ENGINE",
        UserType.COMPANY,
        "Growth Engine (Premium)",
        {"USD": 12900, "EUR": 11900, "INR": 999900},
        30,
        job_credits=7_500,
        candidate_credits=300,
    ),
    Plan(
        "ENTERPRISE_ELITE",
        UserType.COMPANY,
        "Enterprise Elite",
        {"USD": 49900, "EUR": 45900, "INR": 3999900},
        30,
        job_credits=999_999,
        candidate_credits=1_500,
    ),
    Plan("MONTHLY", UserType.COMPANY, "Company Premium (monthly)", {"USD": 3000, "EUR": 2800}, 30),
    Plan(
        "MONTHLY", UserType.APPLICANT, "Applicant Premium (monthly)", {"USD": 1000, "EUR": 900}, 30
    ),
)


def parse_plans(raw: str) -> tuple[Plan, ...]:
    """Plans from JSON: [{"code", "user_type", "name", "prices": {"USD": 3000}, "period_days",
    "job_credits"?, "candidate_credits"?}]."""
    try:
        items: Any = json.loads(raw)
    except ValueError as exc:
        raise ValueError(f"plans file is not JSON: {exc}") from None
    if not isinstance(items, list) or not items:
        raise ValueError("plans file must hold a non-empty JSON list")
    plans = []
    seen = set()
    for i, item in enumerate(items):
        try:
            prices = {str(c): int(a) for c, a in dict(item["prices"]).items()}
            plan = Plan(
                code=str(item["code"]).upper(),
                user_type=UserType(str(item["user_type"]).upper()),
                name=str(item.get("name") or item["code"]),
                prices=prices,
                period_days=int(item["period_days"]),
                job_credits=int(item.get("job_credits", 0)),
                candidate_credits=int(item.get("candidate_credits", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"plan #{i} is invalid: {exc}") from None
        if not prices or plan.period_days <= 0:
            raise ValueError(f"plan #{i} needs prices and a positive period_days")
        if plan.job_credits < 0 or plan.candidate_credits < 0:
            raise ValueError(f"plan #{i} grants a negative number of credits")
        for currency, amount in prices.items():
            money.validate_unit(currency, cash_only=True)
            money.validate_amount(amount, allow_zero=True)
        if not plan.free and any(amount == 0 for amount in prices.values()):
            raise ValueError(f"plan #{i} is free in one currency and paid in another")
        if (plan.code, plan.user_type) in seen:
            raise ValueError(f"plan {plan.code} for {plan.user_type} is defined twice")
        seen.add((plan.code, plan.user_type))
        plans.append(plan)
    return tuple(plans)


def find_plan(plans: tuple[Plan, ...], code: str, user_type: UserType) -> Plan:
    for plan in plans:
        if plan.code == code.upper() and plan.user_type is user_type:
            return plan
    raise errors.PlanNotFound(code, user_type.value, "")
