"""`python -m tests.support.jobs_process`: the real jobs service with faults injected from tests.

The service is built exactly as `python -m jobs` builds it; only its ports are wrapped:
- HIREPAY_TEST_CRASH_AFTER_STEP: exit 137 (as kill -9 would) right after this saga step
  (pending, try, activate, confirm);
- HIREPAY_TEST_REFUSE_ACTIVATION_MARKER: jobs whose title contains it cannot be activated (PAY-7).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import replace

from hirepay_platform.settings import load_settings
from jobs.entrypoints.main import build_adapters, build_app
from jobs.entrypoints.settings import JobsSettings
from jobs.service_layer.ports import JobsUnitOfWork
from tests.support.jobs_faults import (
    CRASH_STEPS,
    CrashingOfferFundsByMethod,
    CrashingParticipants,
    FaultyUnitOfWork,
)

MODULE = "tests.support.jobs_process"
CRASH_AFTER_STEP = "HIREPAY_TEST_CRASH_AFTER_STEP"
REFUSE_ACTIVATION_MARKER = "HIREPAY_TEST_REFUSE_ACTIVATION_MARKER"


def _crash() -> None:
    os._exit(137)


def main() -> None:
    step = os.environ.get(CRASH_AFTER_STEP, "")
    if step and step not in CRASH_STEPS:
        raise SystemExit(f"{CRASH_AFTER_STEP} must be one of {', '.join(CRASH_STEPS)}")
    marker = os.environ.get(REFUSE_ACTIVATION_MARKER, "")
    settings = load_settings(JobsSettings)
    adapters = build_adapters(settings)

    def faulty(real_uow: Callable[[], JobsUnitOfWork]) -> Callable[[], FaultyUnitOfWork]:
        def uow_factory() -> FaultyUnitOfWork:
            return FaultyUnitOfWork(
                real_uow(), crash_after=step, crash=_crash, refuse_activation_marker=marker
            )

        return uow_factory

    posting_uows = adapters.posting_uow_factory
    adapters = replace(
        adapters,
        uow_factory=faulty(adapters.uow_factory),
        posting_uow_factory=faulty(posting_uows) if posting_uows else None,
        participants=CrashingParticipants(adapters.participants, step, _crash),
        offer_funds=CrashingOfferFundsByMethod(adapters.offer_funds, step, _crash),
    )
    build_app(settings, adapters).run()


if __name__ == "__main__":
    main()
