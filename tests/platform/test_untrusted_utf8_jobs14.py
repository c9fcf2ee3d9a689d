"""loads_json decodes bytes as json.loads does (json.detect_encoding's choice), finding UTF-8
JSON without detect_encoding's calls (issue 13: every request body and webhook payload)."""

from __future__ import annotations

import codecs
import json
import pstats
from typing import Any

import pytest

from hirepay_platform.untrusted import loads_json
from tests.support.python_calls import profiled

DOC = {"id": "evt_1", "type": "payment_intent.succeeded", "data": {"note": "café ✓ 💳"}}
TEXT = json.dumps(DOC, ensure_ascii=False)

BODIES: list[bytes] = [
    TEXT.encode("utf-8"),
    codecs.BOM_UTF8 + TEXT.encode("utf-8"),
    TEXT.encode("utf-16"),  # with its BOM
    TEXT.encode("utf-16-le"),
    TEXT.encode("utf-16-be"),
    TEXT.encode("utf-32"),
    TEXT.encode("utf-32-le"),
    TEXT.encode("utf-32-be"),
    b"1",
    b"12",
    b"123",
    b"[1]",
    b'"\\u00e9"',
    "1".encode("utf-16-le"),
    "1".encode("utf-16-be"),
    b"",
    b"\xff",
    b"\xef\xbb",
    b"\xfe\xff\x00",
    b"\x001",
    b"1\x00",
    b"1\x002",
    b"\xc3\xa9",  # UTF-8 é, not JSON
    b'"\xed\xa0\x80"',  # a lone surrogate encoded: refused by loads_json's own check
]


def _outcome(parse: Any, raw: Any) -> Any:
    try:
        return ("value", parse(raw))
    except Exception as exc:  # the kind of refusal, not its wording
        return ("error", type(exc).__name__)


def _as_json_decodes(raw: bytes) -> Any:
    """loads_json's checks on what json.loads would decode (its choice of encoding)."""
    return loads_json(raw.decode(json.detect_encoding(raw), "surrogatepass"))


@pytest.mark.parametrize("raw", BODIES)
def test_bytes_decode_as_json_loads_decodes_them(raw: bytes) -> None:
    assert _outcome(loads_json, raw) == _outcome(_as_json_decodes, raw)
    assert _outcome(loads_json, bytearray(raw)) == _outcome(_as_json_decodes, raw)


def test_utf8_json_is_read_without_detect_encoding() -> None:
    raw = TEXT.encode("utf-8")
    loads_json(raw)  # (warm: first-use caches)
    with profiled() as profile:
        value = loads_json(raw)
    assert value == DOC
    names = {name for (_, _, name) in pstats.Stats(profile).stats}  # type: ignore[attr-defined]
    assert "detect_encoding" not in names
