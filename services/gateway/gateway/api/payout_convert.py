"""Payout accounts and withdrawals: gRPC (payments) -> HTTP."""

from __future__ import annotations

from gateway.api import payout_models as m
from gateway.api.convert import money_to_http, timestamp_to_iso
from hirepay.payments.v1 import payments_service_pb2 as pay_pb


def payout_account_to_http(account: pay_pb.PayoutAccount) -> m.PayoutAccountOut:
    onboarding = account.state == pay_pb.PayoutAccount.ONBOARDING
    return m.PayoutAccountOut(
        provider=account.provider,
        providerAccountId=account.provider_account_id,
        status="onboarding" if onboarding else "active",
        onboardingUrl=account.onboarding_url or None,
        createdAt=timestamp_to_iso(account.created_at, account.HasField("created_at")),
        updatedAt=timestamp_to_iso(account.updated_at, account.HasField("updated_at")),
    )


def withdrawal_to_http(w: pay_pb.Withdrawal) -> m.WithdrawalOut:
    return m.WithdrawalOut(
        id=w.withdrawal_id,
        status=pay_pb.Withdrawal.State.Name(w.state).lower(),  # type: ignore[arg-type]
        amount=money_to_http(w.amount, w.HasField("amount")),
        provider=w.provider,
        transferId=w.transfer_id or None,
        payoutId=w.payout_id or None,
        failureCode=w.failure_code or None,
        failureMessage=w.failure_message or None,
        createdAt=timestamp_to_iso(w.created_at, w.HasField("created_at")),
        updatedAt=timestamp_to_iso(w.updated_at, w.HasField("updated_at")),
    )
