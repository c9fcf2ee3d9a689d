"""Schemathesis against the gateway's own OpenAPI with every process real (the e2e `system`):
schema-conforming and schema-violating requests, with a company token and anonymous, must never get
a 5xx or a status code the operation does not document. Bounded: a fixed number of examples per
operation and mode, derandomized (the same requests every run), and an overall time budget after
which the remaining examples are not sent.

The harness keeps the gateway busy: one kept-alive connection per identity (a new TCP connection and
`requests` session per call before), and a sender thread that makes each example's calls while
Hypothesis generates the next example (one request in flight at a time, as before; a check that
fails is reported for its operation and mode once its examples are sent).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

import hypothesis
import hypothesis.errors
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.schemas import APIOperation
from schemathesis.specs.openapi.checks import status_code_conformance
from schemathesis.transport.requests import ManagedCookiesSession

from tests.e2e.conftest import System

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 50  # per operation and generation mode
BUDGET_SECONDS = 150.0
CHECKS = [not_a_server_error, status_code_conformance]


class _BudgetSpent(Exception):
    """Raised by an example once the time budget is spent: the run stops there, instead of
    generating the remaining operations' examples only to drop them (on a loaded machine that
    generation alone outlasted the test's timeout)."""


def _generate(
    operation: APIOperation,
    mode: GenerationMode,
    deadline: float,
    hand_over: Callable[[schemathesis.Case], object],
) -> None:
    """Hypothesis generates the operation's examples in this mode, handing each over to be sent."""

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
            raise _BudgetSpent  # the remaining examples are not generated
        hand_over(case)

    run()


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
    # Schemathesis' own session class (what it makes per call when given none): cookies dropped
    # after every call, redirects followed within the host only; one per identity, kept alive.
    as_company, as_generated = ManagedCookiesSession(), ManagedCookiesSession()

    def send(case: schemathesis.Case) -> None:
        if time.monotonic() > deadline:
            raise _BudgetSpent  # the remaining examples are not sent
        # Once with a company's token, once as generated (anonymous or with a made-up
        # Authorization): answers behind the token and public ones are both explored.
        response = case.call_and_validate(session=as_company, headers=company, checks=CHECKS)
        seen.append(response.status_code)
        seen.append(case.call_and_validate(session=as_generated, checks=CHECKS).status_code)

    with ThreadPoolExecutor(max_workers=1) as sender, as_company, as_generated:
        for result in schema.get_all_operations():
            operation = result.ok()
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                sent: list[Future[None]] = []
                covered.append(f"{operation.label} ({mode.value})")
                try:
                    _generate(
                        operation,
                        mode,
                        deadline,
                        lambda c, s=sent: s.append(sender.submit(send, c)),
                    )
                except _BudgetSpent:
                    spent = True
                except hypothesis.errors.Unsatisfiable:
                    pass  # nothing to violate (an operation without parameters or body)
                except Exception as exc:  # collect every operation's failure, report them all
                    failures.append(f"{operation.label} ({mode.value}): {exc}")
                # Every call of the operation and mode made (or skipped past the budget).
                errors = [e for e in (f.exception() for f in sent) if e is not None]
                spent = spent or any(isinstance(e, _BudgetSpent) for e in errors)
                failed = [e for e in errors if not isinstance(e, _BudgetSpent)]
                failures += [
                    f"{operation.label} ({mode.value}), {len(failed)} of {len(sent)} examples: {e}"
                    for e in failed[:1]
                ]
                if spent:
                    break
            if spent:
                break
    print(
        f"schemathesis: {len(seen)} calls over {len(covered)} operation and mode pairs"
        f"{' (time budget spent)' if spent else ''}, statuses {sorted(Counter(seen).items())}"
    )
    assert len(seen) > 100
    assert not failures, "\n\n".join(failures)
