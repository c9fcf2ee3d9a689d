"""The one set of checks for untrusted input: text that PostgreSQL, protobuf and logs can hold,
JSON parsed with a nesting limit, and visible-text lengths (standard library only, so domain
models may use it too).

Every edge (the gateway's HTTP middleware and models, the gRPC interceptor of every service in
server.py, the Stripe webhook parser) uses these, so one rule decides what "bad input" is and it
is refused with a field error (400 / INVALID_ARGUMENT) instead of failing deep in a driver (500).
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

# Deeper JSON than this is refused before parsing; no Hirepay body or Stripe event comes close.
MAX_JSON_DEPTH = 64

# NUL (PostgreSQL text refuses it) and UTF-16 surrogates (not encodable as UTF-8, so protobuf and
# the database refuse them); either one anywhere in a string makes the whole input invalid.
_FORBIDDEN = re.compile(r"[\x00\ud800-\udfff]")
# A JSON string (the unrolled form: a run of plain characters at a time, not one alternation per
# character) and, once strings are gone, what each bracket does to the depth: the scan runs in C
# (it was the costliest part of reading a webhook, issue 13).
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_DEPTH_STEP = [1 if b in b"[{" else -1 for b in range(256)]
# Where a parsed JSON string can get a NUL or a lone surrogate from: its escape (a raw NUL is
# refused by json.loads; raw surrogates are matched by _FORBIDDEN on the text itself).
_FORBIDDEN_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
# json.loads of a text, as its default decoder parses one (JSONDecoder.decode): its C scanner
# called here, not through loads, decode and raw_decode, three Python calls per document (issue
# 13: every JSON body at the gateway's edge, three per posting with its webhook deliveries). The
# same value, and the same JSONDecodeError (message and position) for what it refuses.
_SCAN = json.JSONDecoder().scan_once
_SPACE = json.decoder.WHITESPACE.match
# The ASCII characters visible_length does not count (controls, whitespace, the space), as a
# str.translate table that deletes them.
_ASCII_INVISIBLE = dict.fromkeys([*range(0x21), 0x7F])


class UntrustedInputError(ValueError):
    """Input refused; `problem` says why in words safe to return, `field` where (dotted path)."""

    def __init__(self, problem: str, field: str = "body") -> None:
        super().__init__(f"{field}: {problem}")
        self.problem = problem
        self.field = field


def text_problem(value: str) -> str | None:
    """Why a string may not enter the system (a NUL or a lone surrogate), or None when it may."""
    match = _FORBIDDEN.search(value)
    if match is None:
        return None
    return "must not contain NUL characters" if match.group() == "\x00" else "invalid Unicode"


def visible_length(value: str) -> int:
    """The number of characters a person sees: whitespace, controls and invisible format
    characters (zero-width space and joiners, BOM, bidi marks: Unicode categories Cc, Cf, Z*) do
    not count, so a title of only zero-width characters is empty.

    ASCII text (most text) is counted in C: of ASCII, exactly the controls and the space are
    unseen. Looking at each character in Python cost the jobs service about 200 Python calls per
    posting, a twentieth of its calls (issue 13)."""
    if value.isascii():
        return len(value.translate(_ASCII_INVISIBLE))
    return sum(1 for ch in value if not ch.isspace() and unicodedata.category(ch)[0] not in "CZ")


def json_depth_problem(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> str | None:
    """Why a JSON document nests too deeply, found without parsing it (a recursive parser would
    blow the stack on `[[[[...`); None when it is shallow enough or not JSON-like at all."""
    data = raw.encode("utf-8", "surrogatepass") if isinstance(raw, str) else raw
    if data.count(b"[") + data.count(b"{") <= max_depth:
        return None  # even were every opening bracket nested, it is shallow enough (C-speed)
    brackets = _STRING.sub(b"", data).translate(None, _NOT_BRACKETS)
    if max(accumulate(map(_DEPTH_STEP.__getitem__, brackets)), default=0) > max_depth:
        return f"nested deeper than {max_depth} levels"
    return None


# The first bytes with which json.detect_encoding may find anything but UTF-8: a BOM (UTF-8's,
# UTF-16's or UTF-32's) begins with one of these, and UTF-16 or UTF-32 text without one has a NUL
# in its first two bytes.
# (A tuple: compared, not hashed, so a bytearray is looked up as bytes are.)
_NOT_SURELY_UTF8 = (b"\x00", b"\xef", b"\xfe", b"\xff")


def loads_json(raw: bytes | str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """`json.loads` for untrusted input: too deep, NUL or lone surrogates anywhere (keys included)
    raise UntrustedInputError; malformed JSON raises ValueError as json does."""
    # As json.loads decodes bytes; one text to parse and to search. JSON that starts as UTF-8
    # does (every request body and webhook payload here) is UTF-8 to json.detect_encoding too,
    # found without its five calls (issue 13). The depth is counted on UTF-8, the bytes as they
    # came when they are UTF-8: in UTF-16 or UTF-32 a byte that reads as a quote or a bracket may
    # be half of another character, and a stray quote hid real brackets from the count (a deep
    # body then overflowed the parser: RecursionError, not this refusal).
    counted: bytes | str
    utf8: bytes | None = None  # (decoded once the depth passed: too deep is refused even if
    # the bytes are not UTF-8 either, as before)
    if isinstance(raw, str):
        if raw.startswith("\ufeff"):  # as json.loads: refused in a text, dropped from bytes
            raise json.JSONDecodeError("Unexpected UTF-8 BOM (decode using utf-8-sig)", raw, 0)
        decoded = counted = raw
    elif raw[:1] not in _NOT_SURELY_UTF8 and raw[1:2] != b"\x00":
        utf8 = counted = raw
        decoded = ""
    else:
        decoded = counted = raw.decode(json.detect_encoding(raw), "surrogatepass")
    problem = json_depth_problem(counted, max_depth)
    if problem is not None:
        raise UntrustedInputError(problem)
    if utf8 is not None:
        decoded = utf8.decode("utf-8", "surrogatepass")
    try:
        value, end = _SCAN(decoded, _SPACE(decoded, 0).end())
    except StopIteration as err:
        raise json.JSONDecodeError("Expecting value", decoded, err.value) from None
    end = _SPACE(decoded, end).end()
    if end != len(decoded):
        raise json.JSONDecodeError("Extra data", decoded, end)
    if not _FORBIDDEN.search(decoded) and not _FORBIDDEN_ESCAPE.search(decoded):
        return value  # no string in it can hold a NUL or a lone surrogate: no walk needed
    _refuse_forbidden_strings(value)
    return value


def _refuse_forbidden_strings(value: Any) -> None:
    """UntrustedInputError naming the first string (key or value) of `value` holding a NUL or
    a lone surrogate."""
    for path, text in iter_json_strings(value):
        problem = text_problem(text)
        if problem is not None:
            raise UntrustedInputError(problem, (path or "body").replace("\x00", ""))


def iter_json_strings(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """Every string (object keys included) of a parsed JSON value with its dotted path."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            sub = f"{path}.{key}" if path else str(key)
            yield sub, key
            yield from iter_json_strings(item, sub)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from iter_json_strings(item, f"{path}[{index}]")
