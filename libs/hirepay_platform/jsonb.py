"""JSON text for JSONB values, exactly as json.dumps and json.loads make and read it, in fewer
Python calls (issue 13).

The engine's JSONB parameters go through `json.dumps` and its results through `json.loads`
(SQLAlchemy's default serializer and asyncpg codec): a posting costs payments about 26 dumps and
14 loads, each three Python frames around the C encoder or scanner (dumps -> encode -> iterencode,
loads -> decode -> raw_decode and two whitespace matches). These call the same C encoder and
scanner with the same settings directly: the same text for every value, the same exceptions for
every value json refuses (Decimal, UUID, datetime, a circular structure), the same values read.
A faster library (orjson) was measured and not taken: it writes NaN as null, takes UUIDs,
enums and datetimes json refuses, and refuses integers past 64 bits that json takes."""

from __future__ import annotations

import json
from json import encoder as _encoder
from typing import Any

# json's own default encoder and decoder: their settings, their refusal of what is not JSON.
_DEFAULT_ENCODER = json.JSONEncoder()
_DEFAULT_DECODER = json.JSONDecoder()
_scan = _DEFAULT_DECODER.scan_once
_c_make_encoder = _encoder.c_make_encoder


def dumps(value: Any) -> str:
    """`json.dumps(value)`: the same text, the same exceptions (issue 13: one Python call, not
    three). Without json's C accelerator (not the case on CPython) it is json.dumps itself."""
    if _c_make_encoder is None:  # pragma: no cover (CPython has it)
        return json.dumps(value)
    # JSONEncoder.iterencode's C encoder with json.dumps' defaults (a fresh dict of markers per
    # call, as there: a circular structure is refused with json's ValueError).
    d = _DEFAULT_ENCODER
    chunks = _c_make_encoder(
        {},
        d.default,
        _encoder.encode_basestring_ascii,
        d.indent,
        d.key_separator,
        d.item_separator,
        d.sort_keys,
        d.skipkeys,
        d.allow_nan,
    )(value, 0)
    return "".join(chunks)


def loads(text: str) -> Any:
    """`json.loads(text)` of a str: the same value; whatever is not one JSON value with nothing
    around it (whitespace, a BOM, extra data, malformed text) goes to json.loads itself, which
    reads or refuses it as always. PostgreSQL's JSONB text has nothing around its value."""
    try:
        value, end = _scan(text, 0)
    except StopIteration:
        return json.loads(text)
    if end != len(text):
        return json.loads(text)
    return value
