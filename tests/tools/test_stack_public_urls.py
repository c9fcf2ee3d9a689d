"""`make run` lets the environment give payments' public return and cancel URLs (README "Running
against real PayPal, Razorpay and Fatora": set PAYMENTS_CHECKOUT_RETURN_URL to your public
gateway), and otherwise points them at its own gateway."""

from __future__ import annotations

import pytest

from hirepay_dev.stack import Ports, Stack

RETURN = "PAYMENTS_CHECKOUT_RETURN_URL"
CANCEL = "PAYMENTS_CHECKOUT_CANCEL_URL"


def payments_env(stack: Stack | None = None) -> dict[str, str]:
    stack = stack or Stack(server_url="postgresql://unused", ports=Ports.free())
    return stack._service_env("payments", stack.gateway_url)


def test_the_environment_gives_the_public_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    public = "https://pay.example.com/api/payments/return/{provider}?ref={ref}"
    cancel = "https://pay.example.com/api/payments/checkout/cancel?ref={ref}"
    monkeypatch.setenv(RETURN, public)
    monkeypatch.setenv(CANCEL, cancel)
    env = payments_env()
    assert env[RETURN] == public
    assert env[CANCEL] == cancel


def test_without_them_the_urls_point_at_the_stacks_gateway(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(RETURN, raising=False)
    monkeypatch.delenv(CANCEL, raising=False)
    stack = Stack(server_url="postgresql://unused", ports=Ports.free())
    env = payments_env(stack)
    assert env[RETURN] == f"{stack.gateway_url}/api/payments/return/{{provider}}?ref={{ref}}"
    assert env[CANCEL] == f"{stack.gateway_url}/api/payments/checkout/cancel?ref={{ref}}"
