"""Structured JSON logs with secrets masked (card numbers, API keys, webhook secrets, tokens)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

from opentelemetry import trace

_SECRET_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"\b(sk|rk|pk)_(test|live)_[A-Za-z0-9]+"), r"\1_\2_***"),
    (re.compile(r"\bwhsec_[A-Za-z0-9]+"), "whsec_***"),
    (re.compile(r"(?i)\bbearer\s+[A-Za-z0-9._~+/=-]+"), "Bearer ***"),
    (re.compile(r"\beyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "***jwt***"),
    # Primary account numbers: 13-19 digits, optionally grouped by spaces or dashes.
    (re.compile(r"\b(?:\d[ -]?){12,18}\d\b"), "***pan***"),
    (re.compile(r"(?i)(password|secret|cvc|cvv)(['\"]?\s*[:=]\s*['\"]?)[^\s'\",&]+"), r"\1\2***"),
    (re.compile(r"(postgres(?:ql)?(?:\+\w+)?://[^:/@\s]*:)[^@\s]+@"), r"\1***@"),
    # PostgreSQL's DETAIL lines quote the row's values (a duplicate e-mail, a whole failing row);
    # the engines hide statement parameters, and these must not bring them back.
    (re.compile(r"(Key \([^)]*\)=\().*?(\) (?:already exists|is not present))"), r"\1***\2"),
    (re.compile(r"(Failing row contains \().*(\)\.?)"), r"\1***\2"),
]


def _any_of(patterns: list[tuple[re.Pattern[str], str]]) -> re.Pattern[str]:
    """One pattern that matches wherever any of `patterns` would (their own flags kept)."""
    parts = []
    for pattern, _ in patterns:
        source = pattern.pattern.removeprefix("(?i)")
        parts.append(f"(?i:{source})" if pattern.flags & re.IGNORECASE else f"(?:{source})")
    return re.compile("|".join(parts))


# Nearly every logged text (an access line, a duration) holds no secret: one scan that finds none
# proves every substitution would leave it as it is, and skips them (each `sub` with a group
# reference also costs a Python call into `re` even when nothing matches).
_might_hold_secret = _any_of(_SECRET_PATTERNS).search


def _substitute_secrets(text: str) -> str:
    """Every pattern's substitution, in order (a later one sees what the earlier ones left)."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a secret or card number."""
    return text if _might_hold_secret(text) is None else _substitute_secrets(text)


# Built once: `json.dumps` with an option builds a new encoder for every line.
_encode_json = json.JSONEncoder(ensure_ascii=False).encode


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message, extras and tracebacks are masked."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        # (whole second, its "%Y-%m-%dT%H:%M:%S" text): lines come many to a second. One tuple,
        # swapped whole, so threads never see one second's number with another's text.
        self._second: tuple[float, str] = (float("nan"), "")

    def format(self, record: logging.LogRecord) -> str:
        created = record.created
        second, stamp = self._second
        if created // 1 != second:  # floor, as gmtime rounds
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
            self._second = (created // 1, stamp)
        msg = record.getMessage()
        payload: dict[str, object] = {
            "ts": f"{stamp}.{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            # mask_secrets inlined here and below (a Python call less per text).
            "msg": msg if _might_hold_secret(msg) is None else _substitute_secrets(msg),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            payload["trace_id"] = trace_id
        fields = getattr(record, "fields", None)
        if fields:
            for key, value in fields.items():
                text = str(value)
                payload[key] = (
                    text if _might_hold_secret(text) is None else _substitute_secrets(text)
                )
        if record.exc_info:
            payload["exc"] = mask_secrets(self.formatException(record.exc_info))
        return _encode_json(payload)


class _TraceIdFilter(logging.Filter):
    """Attach the current OpenTelemetry trace id so logs and traces join up."""

    def filter(self, record: logging.LogRecord) -> bool:
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            record.trace_id = format(ctx.trace_id, "032x")
        return True


def configure_logging(service: str, level: str = "INFO") -> None:
    """Route every logger to stderr as masked JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(service))
    handler.addFilter(_TraceIdFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # No line carries a thread or process name (see JsonFormatter), so records need not look them
    # up: the logging docs' own optimisation, 9 of about 80 calls per logged line.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    # Access logs of libraries would repeat what the RPC metrics and spans already say.
    for noisy in ("httpx", "httpcore", "stripe", "uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
