"""The `/search` endpoints with a subset of Stripe's query language: `field:'value'`,
`metadata['key']:'value'`, numeric comparisons (`amount>1000`), `-` negation, and clauses joined
by AND or by OR (not mixed, as Stripe requires)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from stripe_sandbox.errors import invalid_param, missing_param
from stripe_sandbox.params import Params
from stripe_sandbox.store import Context, StripeObject

if TYPE_CHECKING:
    from stripe_sandbox.runtime import Sandbox

_CLAUSE = re.compile(
    r"""\s*(?P<neg>-)?
    (?:metadata\[(?P<mq>['"])(?P<meta>[^'"]+)(?P=mq)\]|(?P<field>[a-z_]+))
    \s*(?P<op>:|>=|<=|>|<)\s*
    (?:(?P<q>['"])(?P<text>[^'"]*)(?P=q)|(?P<number>-?\d+))\s*""",
    re.VERBOSE,
)

Predicate = Callable[[StripeObject], bool]


def _clause(match: re.Match[str]) -> Predicate:
    meta, field, op = match.group("meta"), match.group("field"), match.group("op")
    text, number = match.group("text"), match.group("number")
    expected: Any = int(number) if number is not None else text

    def value_of(obj: StripeObject) -> Any:
        return obj.get("metadata", {}).get(meta) if meta else obj.get(field)

    def test(obj: StripeObject) -> bool:
        value = value_of(obj)
        if op == ":":
            return value is not None and str(value) == str(expected)
        if not isinstance(value, int) or not isinstance(expected, int):
            return False
        return {
            ">": value > expected,
            "<": value < expected,
            ">=": value >= expected,
            "<=": value <= expected,
        }[op]

    if match.group("neg"):
        return lambda obj: not test(obj)
    return test


def parse_query(query: str) -> Predicate:
    """A predicate for a Stripe search query (the supported subset)."""
    parts = re.split(r"\s+(AND|OR)\s+", query.strip())
    clauses, joins = parts[0::2], set(parts[1::2])
    if len(joins) > 1:
        raise invalid_param("AND and OR cannot be combined in one query.", param="query")
    predicates: list[Predicate] = []
    for clause in clauses:
        match = _CLAUSE.fullmatch(clause)
        if match is None:
            raise invalid_param(f"Invalid query clause: {clause!r}", param="query")
        predicates.append(_clause(match))
    if joins == {"OR"}:
        return lambda obj: any(p(obj) for p in predicates)
    return lambda obj: all(p(obj) for p in predicates)


def _search(sb: Sandbox, ctx: Context, p: Params, kind: str, url: str) -> StripeObject:
    query = p.text("query")
    if query is None:
        raise missing_param("query")
    matches = parse_query(query)
    limit = p.integer("limit", minimum=1) or 10
    found = [o for o in reversed(sb.store.all(kind, ctx.account)) if matches(o)]
    start = p.integer("page", minimum=0) or 0  # our page cursor is an offset
    page = found[start : start + limit]
    more = len(found) > start + limit
    return {
        "object": "search_result",
        "data": page,
        "has_more": more,
        "next_page": str(start + limit) if more else None,
        "url": url,
    }


def payment_intents(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    return _search(sb, ctx, p, "payment_intent", "/v1/payment_intents/search")


def charges(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    return _search(sb, ctx, p, "charge", "/v1/charges/search")


def customers(sb: Sandbox, ctx: Context, p: Params) -> StripeObject:
    return _search(sb, ctx, p, "customer", "/v1/customers/search")
