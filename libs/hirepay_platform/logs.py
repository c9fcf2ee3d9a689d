"""Structured JSON logs with secrets masked (card numbers, API keys, webhook secrets, tokens)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

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


def mask_secrets(text: str) -> str:
    """Replace anything that looks like a secret or card number."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line; the message, extras and tracebacks are masked."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def format(self, record: logging.LogRecord) -> str:
        payload: dict[str, object] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "service": self.service,
            "logger": record.name,
            "msg": mask_secrets(record.getMessage()),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            payload["trace_id"] = trace_id
        for key, value in getattr(record, "fields", {}).items():
            payload[key] = mask_secrets(str(value))
        if record.exc_info:
            payload["exc"] = mask_secrets(self.formatException(record.exc_info))
        return json.dumps(payload, ensure_ascii=False)


class _TraceIdFilter(logging.Filter):
    """Attach the current OpenTelemetry trace id so logs and traces join up."""

    def filter(self, record: logging.LogRecord) -> bool:
        from opentelemetry import trace

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
    # Access logs of libraries would repeat what the RPC metrics and spans already say.
    for noisy in ("httpx", "httpcore", "stripe", "uvicorn.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
