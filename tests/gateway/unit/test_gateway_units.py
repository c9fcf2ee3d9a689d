"""Pure units of the gateway: the error mapping with the metadata real services send, the token
bucket with a controlled clock, and the idempotency helpers."""

from __future__ import annotations

import time

import pytest

from gateway.adapters.ratelimit import TokenBucketLimiter
from gateway.api.backend_errors import api_error_from_reason, api_error_from_remote
from gateway.api.errors import api_error_from_validation
from gateway.service_layer.auth import Authenticator, InvalidToken, Principal, issue_token
from gateway.service_layer.idempotency import scoped_request_id
from hirepay_platform.errors import ErrorKind, RemoteError
from hirepay_platform.fingerprint import digest


def remote(
    reason: str, kind: ErrorKind, message: str = "from a service", **metadata: str
) -> RemoteError:
    return RemoteError(message, reason=reason, kind=kind, metadata=metadata, service="jobs")


def test_jobs_validation_metadata_becomes_http_field_names() -> None:
    err = api_error_from_remote(
        remote(
            "VALIDATION_FAILED",
            ErrorKind.INVALID_ARGUMENT,
            "the job has invalid fields",
            title="must be at least 3 characters",
            salary_currency="is required with a salary bound",
            transaction_id="saga_1",
        )
    )
    assert err.status == 400
    assert err.body()["fields"] == {
        "title": "must be at least 3 characters",
        "salary_range.currency": "is required with a salary bound",
    }


def test_fee_validation_names_the_http_amount_field() -> None:
    err = api_error_from_remote(
        remote(
            "VALIDATION_FAILED",
            ErrorKind.INVALID_ARGUMENT,
            **{"payment.expected_amount.currency": "not offered for design"},
        )
    )
    assert err.body()["fields"] == {"payment.amount.currency": "not offered for design"}


def test_payment_decline_as_jobs_passes_it_through() -> None:
    err = api_error_from_remote(
        remote(
            "PAYMENT_DECLINED",
            ErrorKind.FAILED_PRECONDITION,
            payment_id="pay_1",
            code="expired_card",
            decline_code="",
            transaction_id="saga_1",
        )
    )
    assert (err.status, err.error) == (402, "PAYMENT_DECLINED")
    assert err.body() == {
        "error": "PAYMENT_DECLINED",
        "message": "Your card has expired",
        "code": "expired_card",
    }


def test_timeout_prefers_the_payment_id_and_falls_back_to_the_transaction() -> None:
    with_payment = remote(
        "PAYMENT_TIMEOUT", ErrorKind.DEADLINE_EXCEEDED, payment_id="pay_9", transaction_id="saga_9"
    )
    assert api_error_from_remote(with_payment).body()["transactionId"] == "pay_9"
    without = remote(
        "PAYMENT_TIMEOUT", ErrorKind.DEADLINE_EXCEEDED, payment_id="", transaction_id="saga_9"
    )
    body = api_error_from_remote(without).body()
    assert body["transactionId"] == "saga_9"
    assert body["retry"] is True


def test_invalid_payment_details_names_the_payment_method_field() -> None:
    err = api_error_from_remote(
        remote(
            "INVALID_PAYMENT_DETAILS",
            ErrorKind.INVALID_ARGUMENT,
            code="resource_missing",
            field="payment_method_token",
            payment_id="pay_2",
            transaction_id="saga_2",
        )
    )
    assert err.body() == {
        "error": "INVALID_PAYMENT_DETAILS",
        "message": "The payment details are invalid",
        "code": "resource_missing",
        "fields": {"payment.payment_method": "invalid"},
    }


@pytest.mark.parametrize(
    ("reason", "kind", "status", "code"),
    [
        ("PAYMENT_CANCELLED", ErrorKind.FAILED_PRECONDITION, 402, "PAYMENT_CANCELLED"),
        ("PAYMENT_EXPIRED", ErrorKind.FAILED_PRECONDITION, 402, "PAYMENT_EXPIRED"),
        ("ACTIVATION_FAILED", ErrorKind.FAILED_PRECONDITION, 409, "ACTIVATION_FAILED"),
        ("CHECKOUT_NOT_CANCELLABLE", ErrorKind.FAILED_PRECONDITION, 409, "CONFLICT"),
        ("RATE", ErrorKind.RESOURCE_EXHAUSTED, 429, "RATE_LIMITED"),
        ("DEADLINE_EXCEEDED", ErrorKind.DEADLINE_EXCEEDED, 504, "UPSTREAM_TIMEOUT"),
    ],
)
def test_other_reasons(reason: str, kind: ErrorKind, status: int, code: str) -> None:
    err = api_error_from_remote(remote(reason, kind))
    assert (err.status, err.error) == (status, code)


def test_transport_failures_never_leak_their_details() -> None:
    # What from_rpc_error builds when a channel cannot connect: no ErrorInfo, the raw details.
    raw = RemoteError(
        "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.0.0.7:50053",
        reason="UNAVAILABLE",
        kind=ErrorKind.UNAVAILABLE,
    )
    body = api_error_from_remote(raw).body()
    assert "10.0.0.7" not in str(body)
    bad_request = RemoteError(
        "Exception deserializing request at /srv/jobs/x.py",
        reason="INVALID_ARGUMENT",
        kind=ErrorKind.INVALID_ARGUMENT,
    )
    assert api_error_from_remote(bad_request).body() == {
        "error": "VALIDATION_FAILED",
        "message": "The request is invalid",
    }
    internal = RemoteError("Traceback ... sk_live_abc", reason="INTERNAL", kind=ErrorKind.INTERNAL)
    assert api_error_from_remote(internal).body() == {
        "error": "INTERNAL_ERROR",
        "message": "Something went wrong on our side",
    }


def test_pydantic_errors_become_field_problems_without_inputs() -> None:
    err = api_error_from_validation(
        [
            {"type": "missing", "loc": ("body", "payment"), "msg": "Field required", "input": {}},
            {
                "type": "string_pattern_mismatch",
                "loc": ("body", "email"),
                "msg": "String should match pattern '^x$'",
                "input": "4242424242424242",
            },
            {
                "type": "int_parsing",
                "loc": ("query", "page_size"),
                "msg": "Input should be a valid integer",
            },
        ]
    )
    assert err.body()["fields"] == {
        "payment": "required",
        "email": "String should match pattern '^x$'",
        "page_size": "Input should be a valid integer",
    }
    assert "4242" not in str(err.body())


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_token_bucket_refills_continuously() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(6, policy="p", clock=clock)  # one token every 10 s
    decisions = [limiter.take("u") for _ in range(7)]
    assert [d.allowed for d in decisions] == [True] * 6 + [False]
    assert decisions[5].remaining == 0
    refused = decisions[6]
    assert refused.retry_after_seconds == 10
    assert refused.headers()["Retry-After"] == "10"
    assert refused.headers()["RateLimit-Policy"] == '"p";q=6;w=60'
    assert refused.headers()["RateLimit"] == '"p";r=0;t=60'
    clock.now += 9.9
    assert not limiter.take("u").allowed
    clock.now += 0.2
    assert limiter.take("u").allowed
    assert limiter.take("other").remaining == 5  # buckets are per key


def test_repeated_attempts_are_charged_once() -> None:
    limiter = TokenBucketLimiter(2, clock=Clock())
    assert limiter.take("u", attempt="k1").remaining == 1
    assert limiter.take("u", attempt="k1").remaining == 1
    assert limiter.take("u", attempt="k2").remaining == 0
    assert limiter.take("u", attempt="k1").allowed  # a replay is never refused
    assert not limiter.take("u", attempt="k3").allowed


def test_bucket_memory_is_bounded() -> None:
    limiter = TokenBucketLimiter(1, clock=Clock(), max_keys=10)
    for i in range(100):
        limiter.take(f"user-{i}", attempt="a")
    assert len(limiter._buckets) == 10
    assert len(limiter._charged) == 10


def test_fingerprint_and_scoped_ids() -> None:
    assert digest({"a": 1, "b": [1, 2]}) == digest({"b": [1, 2], "a": 1})
    assert digest({"a": 1}) != digest({"a": 2})
    assert scoped_request_id("u1", "draft", "k") == scoped_request_id("u1", "draft", "k")
    assert scoped_request_id("u1", "draft", "k") != scoped_request_id("u2", "draft", "k")
    assert len(scoped_request_id("u", "op", "k" * 255)) < 64


def test_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from gateway.entrypoints.settings import GatewaySettings
    from gateway.service_layer.auth import DEV_JWT_KID

    for name in ("GATEWAY_ENV", "GATEWAY_JWT_KEYS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GATEWAY_JOBS_TARGET", "")  # the dev stack passes "" for a missing service
    monkeypatch.setenv("GATEWAY_PAYMENTS_TARGET", "payments:50052")
    monkeypatch.setenv("GATEWAY_PUBLIC_URL", "https://api.example/")
    settings = GatewaySettings()
    assert settings.jobs_target == "127.0.0.1:50053"
    assert settings.payments_target == "payments:50052"
    assert settings.public_url == "https://api.example"
    assert settings.signing_keys() == {
        DEV_JWT_KID: pytest.approx(settings.signing_keys()[DEV_JWT_KID])
    }

    monkeypatch.setenv("GATEWAY_ENV", "production")
    monkeypatch.setenv("GATEWAY_JWT_KEYS", '{"2026-11": "' + "s" * 32 + '"}')
    assert GatewaySettings().signing_keys() == {"2026-11": "s" * 32}
    monkeypatch.setenv("GATEWAY_JWT_KEYS", '{"' + DEV_JWT_KID + '": "' + "s" * 32 + '"}')
    with pytest.raises(ValueError, match="refused outside development"):
        GatewaySettings()
    monkeypatch.setenv("GATEWAY_JWT_KEYS", "[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        GatewaySettings()


def test_posting_blocked_is_429_with_retry_after_from_the_block_window() -> None:
    err = api_error_from_remote(
        remote(
            "POSTING_BLOCKED",
            ErrorKind.RESOURCE_EXHAUSTED,
            "too many failed payments; posting is blocked for review",
            failed_payments="10",
            retry_after_seconds="3600",
        )
    )
    assert (err.status, err.error) == (429, "POSTING_BLOCKED")
    assert err.headers == {"Retry-After": "3600"}
    body = err.body()
    assert body["retry"] is True and body["message"]
    assert set(body) == {"error", "message", "retry"}  # nothing else leaks from the metadata


@pytest.mark.parametrize(
    ("raw", "header"),
    [("90.2", "91"), ("", None), ("0", None), ("-5", None), ("soon", None), ("nan", None)],
)
def test_posting_blocked_retry_after_is_whole_positive_seconds_or_absent(raw, header) -> None:
    err = api_error_from_remote(
        remote("POSTING_BLOCKED", ErrorKind.RESOURCE_EXHAUSTED, retry_after_seconds=raw)
    )
    assert (err.status, err.error, err.body()["retry"]) == (429, "POSTING_BLOCKED", True)
    assert err.headers.get("Retry-After") == header


# Issue 13: the gateway remembers accepted user tokens until they expire.


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


_KEYS = {"k1": "gateway-unit-test-key-0123456789abcdef"}


def _authenticator(clock: _Clock) -> Authenticator:
    return Authenticator(_KEYS, issuer="iss", audience="aud", leeway=30, clock=clock)


def _token(user: str, role: str = "company", ttl_seconds: int = 3600) -> str:
    return issue_token(
        user_id=user,
        role=role,
        kid="k1",
        secret=_KEYS["k1"],
        issuer="iss",
        audience="aud",
        ttl_seconds=ttl_seconds,
    )


def test_a_remembered_user_token_is_refused_once_it_expires() -> None:
    clock = _Clock()
    auth = _authenticator(clock)
    token = _token("alice", ttl_seconds=600)
    assert auth.verify(token) == Principal("alice", "company")
    clock.now += 600 + 29  # within the leeway
    assert auth.verify(token).user_id == "alice"
    clock.now += 1
    with pytest.raises(InvalidToken, match="expired"):
        auth.verify(token)


def test_remembered_user_tokens_never_speak_for_another_user() -> None:
    auth = _authenticator(_Clock())
    alice, bob, admin = _token("alice"), _token("bob"), _token("alice", role="admin")
    for token, who in [(alice, "alice"), (bob, "bob"), (alice, "alice"), (admin, "alice")]:
        principal = auth.verify(token)
        assert principal.user_id == who
    assert auth.verify(admin).role == "admin" and auth.verify(alice).role == "company"
    # A token differing in one byte is checked afresh, and refused.
    with pytest.raises(InvalidToken):
        auth.verify(alice[:-2] + ("AA" if alice[-2:] != "AA" else "BB"))
    # A refusal is not remembered as anything: the same bad token is refused every time.
    long_lived = _token("carol", ttl_seconds=10 * 86_400)
    for _ in range(2):
        with pytest.raises(InvalidToken, match="lifetime"):
            auth.verify(long_lived)


def test_security_headers_keep_a_routes_own_and_follow_the_first_content_type() -> None:
    from gateway.entrypoints.observability import API_CSP, HSTS, HTML_CSP, security_headers

    own = [(b"Content-Type", b"text/html; charset=utf-8"), (b"Cache-Control", b"max-age=60")]
    out = security_headers(list(own), is_api=True, tls=True)
    assert out[:2] == own  # the route's headers first, as sent; its Cache-Control kept
    assert out[2:] == [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", HTML_CSP),
        (b"strict-transport-security", HSTS),
    ]
    # The first of repeated content types decides the CSP; no TLS, no HSTS; no API, no no-store.
    json_first = [(b"content-type", b"application/json"), (b"content-type", b"text/html")]
    assert security_headers(json_first, is_api=False, tls=False)[2:] == [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (b"content-security-policy", API_CSP),
    ]
    api = security_headers([(b"x-frame-options", b"SAMEORIGIN")], is_api=True, tls=False)
    assert (b"x-frame-options", b"DENY") not in api
    assert api[-1] == (b"cache-control", b"no-store")


def test_job_payment_fields_only_with_payment() -> None:
    from gateway.api.convert import job_to_http
    from hirepay.common.v1 import common_pb2
    from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb

    job = jobs_pb.Job(
        job_id="job_1",
        status=jobs_pb.Job.ACTIVE,
        payment_id="pay_1",
        payment_status=jobs_pb.Job.COMPLETED,
        payment_amount=common_pb2.Money(amount_minor=4900, currency="USD"),
        payment_method="card",
    )
    shown = job_to_http(job)
    assert (shown.payment_id, shown.payment_status, shown.payment_method) == (
        "pay_1",
        "completed",
        "card",
    )
    assert shown.payment_amount is not None and shown.payment_amount.amount_minor == 4900
    assert shown.failure_reason is None
    hidden = job_to_http(job, with_payment=False)
    assert hidden.payment_id is None and hidden.payment_amount is None
    assert "payment_id" not in hidden.model_fields_set
    payment_fields = {
        "payment_id",
        "payment_status",
        "payment_amount",
        "payment_method",
        "failure_reason",
    }
    assert hidden.model_dump(exclude=payment_fields) == shown.model_dump(exclude=payment_fields)


def test_a_bad_signature_is_not_called_a_webhook_s() -> None:
    """INVALID_SIGNATURE also answers a customer's return from Razorpay or Fatora and Checkout.js's
    verify: its message must not send them looking for a webhook (seen against `make run`)."""
    answer = api_error_from_reason("INVALID_SIGNATURE")
    assert answer.status == 400
    assert "webhook" not in str(answer).lower()
