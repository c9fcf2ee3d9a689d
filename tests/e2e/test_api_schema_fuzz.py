"""Schemathesis against the gateway's own OpenAPI with every process real (the e2e `system`):
schema-conforming and schema-violating requests, with a company token and anonymous, must never get
a 5xx or a status code the operation does not document. Bounded: a fixed number of examples per
operation and mode, derandomized (the same requests every run), and an overall time budget after
which the remaining examples are not sent.
"""

from __future__ import annotations

import time
from collections import Counter

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import status_code_conformance

from tests.e2e.conftest import System

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 50  # per operation and generation mode
BUDGET_SECONDS = 150.0
CHECKS = [not_a_server_error, status_code_conformance]


class _BudgetSpent(Exception):
    """Raised by an example once the time budget is spent: the run stops there, instead of
    generating the remaining operations' examples only to drop them (on a loaded machine that
    generation alone outlasted the test's timeout)."""


def test_no_server_error_and_only_documented_statuses(system: System) -> None:
    schema = schemathesis.openapi.from_url(
        f"{system.stack.gateway_url}/openapi.json",
        config=schemathesis.Config.from_dict({"request-timeout": 30}),
    )
    company = {"Authorization": f"Bearer {system.token('fuzz-company')}"}
    deadline = time.monotonic() + BUDGET_SECONDS
    failures: list[str] = []
    seen: list[int] = []
    covered: list[str] = []
    spent = False
    for result in schema.get_all_operations():
        if spent:
            break
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @hypothesis.settings(
                max_examples=MAX_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def run(case: schemathesis.Case) -> None:
                if time.monotonic() > deadline:
                    raise _BudgetSpent  # the remaining examples are not sent
                # Once with a company's token, once as generated (anonymous or with a made-up
                # Authorization): answers behind the token and public ones are both explored.
                seen.append(case.call_and_validate(headers=company, checks=CHECKS).status_code)
                seen.append(case.call_and_validate(checks=CHECKS).status_code)

            covered.append(f"{operation.label} ({mode.value})")
            try:
                run()
            except _BudgetSpent:
                spent = True
                break
            except hypothesis.errors.Unsatisfiable:
                continue  # nothing to violate (an operation without parameters or body)
            except Exception as exc:  # collect every operation's failure, then report them all
                failures.append(f"{operation.label} ({mode.value}): {exc}")
    print(
        f"schemathesis: {len(seen)} calls over {len(covered)} operation and mode pairs"
        f"{' (time budget spent)' if spent else ''}, statuses {sorted(Counter(seen).items())}"
    )
    assert len(seen) > 100
    assert not failures, "\n\n".join(failures)
