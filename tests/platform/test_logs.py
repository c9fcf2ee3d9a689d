"""The JSON log line, byte for byte: keys, order, escaping, timestamps, trace ids and masking.

These pin what every service writes to its logs, so the formatter can be made cheaper without a
byte of output (or a secret's mask) changing.
"""

from __future__ import annotations

import logging
import random
import re
import sys
import traceback
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from hirepay_platform.logs import (
    _SECRET_PATTERNS,
    JsonFormatter,
    _TraceIdFilter,
    configure_logging,
    mask_secrets,
)

CREATED = 1764565255.123456  # 2025-12-01T05:00:55.123Z
TS = '"ts": "2025-12-01T05:00:55.123Z"'
HEAD = f'{{{TS}, "level": "INFO", "service": "gateway", "logger": "gateway.access"'


def record(
    msg: str,
    args: tuple[object, ...] = (),
    *,
    level: int = logging.INFO,
    created: float = CREATED,
    exc_info: object = None,
    **attrs: object,
) -> logging.LogRecord:
    """A record as `logging` makes it, at a fixed time (msecs computed as LogRecord does)."""
    made = logging.LogRecord("gateway.access", level, __file__, 1, msg, args, exc_info)  # type: ignore[arg-type]
    made.created = created
    made.msecs = int((created - int(created)) * 1000) + 0.0
    for key, value in attrs.items():
        setattr(made, key, value)
    return made


def test_access_log_line_is_pinned() -> None:
    line = JsonFormatter("gateway").format(
        record("%s %s %s", ("POST", "/v1/payments", 201), fields={"duration_ms": 12.3})
    )
    assert line == HEAD + ', "msg": "POST /v1/payments 201", "duration_ms": "12.3"}'


def test_trace_id_follows_the_message_before_the_fields() -> None:
    line = JsonFormatter("gateway").format(
        record(
            "%s %s %s",
            ("GET", "/v1/jobs/{job_id}", 404),
            trace_id="0af7651916cd43dd8448eb211c80319c",
            fields={"duration_ms": 3.0},
        )
    )
    assert line == (
        HEAD + ', "msg": "GET /v1/jobs/{job_id} 404", '
        '"trace_id": "0af7651916cd43dd8448eb211c80319c", "duration_ms": "3.0"}'
    )


def test_secrets_in_message_and_fields_are_masked() -> None:
    line = JsonFormatter("gateway").format(
        record(
            "charge with sk_live_abc123 for 4242 4242 4242 4242",
            fields={
                "auth": "Bearer eyJa.b.c",
                "dsn": "postgresql://app:hunter2@db/x",
                "n": 7,
                "note": 'password="p4ss"',
            },
        )
    )
    assert line == (
        HEAD + ', "msg": "charge with sk_live_*** for ***pan***", "auth": "Bearer ***", '
        '"dsn": "postgresql://app:***@db/x", "n": "7", "note": "password=\\"***\\""}'
    )
    for secret in ("abc123", "4242", "eyJa", "hunter2", "p4ss"):
        assert secret not in line


def test_escaping_and_fields_that_reuse_keys() -> None:
    # A field named like a fixed key replaces its value in place; keys that are not text are
    # written as json writes them; text stays unescaped unicode (ensure_ascii=False).
    line = JsonFormatter("gateway").format(
        record(
            'caf\u00e9 \u2713 "quoted" \\ tab\there\nnl \x01',
            fields={"msg": "overrides in place", 3: "int key", "trace_id": "late"},
        )
    )
    assert line == HEAD + ', "msg": "overrides in place", "3": "int key", "trace_id": "late"}'
    line = JsonFormatter("gateway").format(record('caf\u00e9 \u2713 "q" \\ t\tn\nc \x01'))
    assert line == HEAD + ', "msg": "caf\u00e9 \u2713 \\"q\\" \\\\ t\\tn\\nc \\u0001"}'


def test_a_number_as_long_as_a_card_is_masked_in_fields_too() -> None:
    line = JsonFormatter("svc").format(record("m", fields={"big": 1234567890123.5, "ok": 12.5}))
    assert line.endswith('"msg": "m", "big": "***pan***.5", "ok": "12.5"}')


def test_timestamps_across_second_boundaries() -> None:
    formatter = JsonFormatter("gateway")
    stamps = [
        (1764565259.9996, "2025-12-01T05:00:59.999Z"),
        (1764565260.0, "2025-12-01T05:01:00.000Z"),
        (1764565260.5, "2025-12-01T05:01:00.500Z"),
        (1764565259.25, "2025-12-01T05:00:59.250Z"),  # an older record after a newer one
        (0.5, "1970-01-01T00:00:00.500Z"),
    ]
    for created, expected in stamps:
        line = formatter.format(record("x", created=created))
        assert line.startswith(f'{{"ts": "{expected}", ')


def test_exception_line_carries_the_masked_traceback_last() -> None:
    try:
        raise ValueError("bad key sk_live_abcdef and card 4000000000000002")
    except ValueError:
        exc_info = sys.exc_info()
    made = record(
        "oops %s", ("whsec_zz9",), level=logging.ERROR, exc_info=exc_info, fields={"method": "POST"}
    )
    line = JsonFormatter("gateway").format(made)
    text = "".join(traceback.format_exception(*exc_info)).rstrip("\n")
    assert "sk_live_abcdef" in text  # what the formatter must hide
    masked = mask_secrets(text)
    assert "sk_live_abcdef" not in masked and "4000000000000002" not in masked
    escaped = masked.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    assert line == (
        '{"ts": "2025-12-01T05:00:55.123Z", "level": "ERROR", "service": "gateway", '
        '"logger": "gateway.access", "msg": "oops whsec_***", "method": "POST", '
        f'"exc": "{escaped}"}}'
    )
    # Formatting twice gives the same line (nothing cached on the record changes it).
    assert JsonFormatter("gateway").format(made) == line


MASKING_CORPUS = [
    "",
    "POST /v1/payments 201",
    "12.3",
    "key sk_test_51Habc123XYZ and rk_live_Q and pk_test_",
    "hook whsec_abcdef012345",
    "Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.sig",
    "BEARER token.with~chars+/=",
    "jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ4In0.",
    "card 4242 4242 4242 4242 and 4000000000000002 and 4000-0000-0000-0002",
    "short 123456789012 long 12345678901234567890123",
    "url postgresql://postgres:hunter2@db/x postgres+asyncpg://u:p@h/d",
    "cvc=\"123\" CVV: 456 Password='x y' secret=abc&next=1",
    "DETAIL:  Key (email)=(bob@example.test) already exists.",
    'Key (owner_email)=(bob@example.test) is not present in table "owners".',
    "DETAIL:  Failing row contains (42, bob@example.test, null).",
    "passwords are fine; secretary; cvc without value",
    "caf\u00e9 \u2713 sk_live_\u00e9",
    "xsk_live_abc (no word boundary) whsec_ 4242424242424242x",
]


@pytest.mark.parametrize("text", MASKING_CORPUS)
def test_mask_secrets_is_every_pattern_in_order(text: str) -> None:
    expected = text
    for pattern, replacement in _SECRET_PATTERNS:
        expected = pattern.sub(replacement, expected)
    assert mask_secrets(text) == expected


# Pieces of secrets and their near misses, glued at random: masking skips its substitutions only
# when one scan finds nothing any of them would match, so it must agree with all of them everywhere.
FRAGMENTS = [
    "sk_", "live_", "test_", "pk", "rk_test_", "whsec_", "Bearer ", "bearer\t", "eyJ", "eyJa.b",
    ".", "-", " ", "4242", "4000 0000", "0000-0002", "1234567890", "9", "password", "Secret",
    "CVC", "cvv", "=", ":", '"', "'", "&", "postgres://", "postgresql+asyncpg://", "u:", "p@",
    "@h", "Key (", "email", ")=(", ") already exists", ") is not present", "Failing row contains (",
    ").", "x", "\u00e9", "\n", "_", "/", "~",
]  # fmt: skip


def test_mask_secrets_agrees_with_every_pattern_on_random_texts() -> None:
    rng = random.Random(13)
    for _ in range(3000):
        text = "".join(rng.choice(FRAGMENTS) for _ in range(rng.randint(1, 12)))
        expected = text
        for pattern, replacement in _SECRET_PATTERNS:
            expected = pattern.sub(replacement, expected)
        assert mask_secrets(text) == expected, text


def test_trace_id_filter_reads_the_current_span() -> None:
    filt = _TraceIdFilter()
    outside = record("x")
    assert filt.filter(outside) is True and not hasattr(outside, "trace_id")
    context = SpanContext(
        0x0AF7651916CD43DD8448EB211C80319C,
        0xB7AD6B7169203331,
        False,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    with trace.use_span(NonRecordingSpan(context)):
        inside = record("y")
        assert filt.filter(inside) is True
    assert inside.trace_id == "0af7651916cd43dd8448eb211c80319c"  # type: ignore[attr-defined]
    with trace.use_span(NonRecordingSpan(SpanContext(0x1, 0x2, False))):
        small = record("z")
        filt.filter(small)
    assert small.trace_id == "00000000000000000000000000000001"  # type: ignore[attr-defined]
    after = record("w")
    filt.filter(after)
    assert not hasattr(after, "trace_id")


def test_handler_writes_one_line_per_record(capsys: pytest.CaptureFixture[str]) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter("gateway"))
    handler.addFilter(_TraceIdFilter())
    handler.handle(record("%s %s %s", ("POST", "/v1/payments", 201)))
    assert capsys.readouterr().out == HEAD + ', "msg": "POST /v1/payments 201"}\n'


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state: put it back for the other tests."""
    loggers = [logging.getLogger(name) for name in ("", "httpx", "httpcore", "stripe", "asyncio")]
    loggers.append(logging.getLogger("uvicorn.access"))
    levels = [logger.level for logger in loggers]
    handlers = loggers[0].handlers[:]
    flags = (logging.logThreads, logging.logProcesses, logging.logMultiprocessing)
    yield
    loggers[0].handlers[:] = handlers
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)
    logging.logThreads, logging.logProcesses, logging.logMultiprocessing = flags


def test_configured_logging_writes_the_access_line_in_a_trace(
    restored_logging: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("gateway", "info")  # binds sys.stderr, which capsys has replaced
    context = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False)
    with trace.use_span(NonRecordingSpan(context)):
        logging.getLogger("gateway.access").info(
            "%s %s %s", "POST", "/v1/payments", 201, extra={"fields": {"duration_ms": 12.3}}
        )
    logging.getLogger("gateway.access").debug("below the level: not written")
    assert re.fullmatch(
        r'\{"ts": "\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", "level": "INFO", '
        r'"service": "gateway", "logger": "gateway.access", "msg": "POST /v1/payments 201", '
        r'"trace_id": "0af7651916cd43dd8448eb211c80319c", "duration_ms": "12.3"\}\n',
        capsys.readouterr().err,
    )
