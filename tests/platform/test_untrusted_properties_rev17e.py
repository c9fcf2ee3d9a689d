"""loads_json against json.loads on generated input (rev17e review of jobsgw17's direct scanner
call): for every text, in every encoding json.loads accepts bytes in, the same value or the same
error, except a refusal loads_json owes (too deep, a NUL or a lone surrogate in a string); and
never RecursionError, whatever bytes hold the brackets (UTF-16/32 bodies hid them from the
depth count: a quote byte inside another character made the count skip real brackets)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hirepay_platform.untrusted import MAX_JSON_DEPTH, UntrustedInputError, loads_json

# Pieces JSON is made of, and the hostile ones: characters whose UTF-16/32 code units hold a
# quote (U+4E22, U+2200 in UTF-16-BE: 0x22) or a bracket byte (U+5B5B, U+7B7B), BOMs, NUL and
# lone surrogates raw and escaped, constants json.loads accepts beyond JSON.
_PIECES = [
    *"[]{}\",:\\ 0123456789.eE+-",
    "true", "false", "null", "NaN", "Infinity", "-Infinity",
    '"a"', '"\\""', '"\\\\"', "\\u00e9", "\\u0000", "\\ud800", "\\udc00", "\\ud83d\\ude00",
    "\u4e22", "\u2200", "\u5b5b", "\u7b7b", "\u225b", "é", "😀",
    "\x00", "\ud800", "\ufeff", "\n", "\t", "\r", "\x01",
]  # fmt: skip
_TEXTS = st.lists(st.sampled_from(_PIECES), max_size=40).map("".join)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4)
    ),
    max_leaves=20,
)
_DOCUMENTS = st.tuples(_VALUES, st.booleans(), st.sampled_from([None, 0, 2])).map(
    lambda v: json.dumps(v[0], ensure_ascii=v[1], indent=v[2])
)
_ENCODINGS = [
    "str",
    "utf-8",
    "utf-8-sig",
    "utf-16",
    "utf-16-le",
    "utf-16-be",
    "utf-32",
    "utf-32-le",
    "utf-32-be",
]
_FORBIDDEN = re.compile(r"[\x00\ud800-\udfff]")


def _encoded(text: str, encoding: str) -> bytes | str:
    return text if encoding == "str" else text.encode(encoding, "surrogatepass")


def _outcome(parse: Any, raw: bytes | str, *args: Any) -> tuple[Any, ...]:
    try:
        return ("value", repr(parse(raw, *args)))
    except UntrustedInputError as exc:
        return ("refused", exc.problem)
    except json.JSONDecodeError as exc:
        return ("error", exc.msg, exc.pos, exc.doc)
    except ValueError as exc:  # UnicodeDecodeError
        return ("error", type(exc).__name__, str(exc))
    except RecursionError:
        return ("recursion",)


def _depth(value: Any) -> int:
    """Nesting of a parsed value as the depth rule counts brackets: [] is 1, a scalar 0."""
    deepest, todo = 0, [(value, 0)]
    while todo:
        item, level = todo.pop()
        if isinstance(item, (list, dict)):
            deepest = max(deepest, level + 1)
            todo.extend(
                (child, level + 1) for child in (item.values() if isinstance(item, dict) else item)
            )
    return deepest


def _strings(value: Any) -> list[str]:
    found, todo = [], [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            found.append(item)
        elif isinstance(item, dict):
            found.extend(item)
            todo.extend(item.values())
        elif isinstance(item, list):
            todo.extend(item)
    return found


def _assert_as_json_loads(raw: bytes | str, max_depth: int) -> None:
    ours = _outcome(loads_json, raw, max_depth)
    assert ours[0] != "recursion", raw
    theirs = _outcome(json.loads, raw)
    if ours[0] != "refused":
        assert ours == theirs, raw
        if ours[0] == "value":  # accepted: shallow enough, and no string holds NUL or a surrogate
            value = json.loads(raw)
            assert _depth(value) <= max_depth, raw
            assert not any(_FORBIDDEN.search(s) for s in _strings(value)), raw
        return
    if theirs[0] == "value":  # refused what json.loads reads: only for a reason it owes
        value = json.loads(raw)
        if ours[1].startswith("nested deeper"):
            assert _depth(value) > max_depth, raw
        else:
            assert any(_FORBIDDEN.search(s) for s in _strings(value)), raw


_SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@_SETTINGS
@given(
    text=_TEXTS,
    encoding=st.sampled_from(_ENCODINGS),
    max_depth=st.sampled_from([1, 2, 3, MAX_JSON_DEPTH]),
)
def test_any_text_in_any_encoding_reads_as_json_loads_reads_it(
    text: str, encoding: str, max_depth: int
) -> None:
    _assert_as_json_loads(_encoded(text, encoding), max_depth)


@_SETTINGS
@given(
    text=_DOCUMENTS,
    encoding=st.sampled_from(_ENCODINGS),
    max_depth=st.sampled_from([1, 2, 3, MAX_JSON_DEPTH]),
)
def test_any_document_in_any_encoding_reads_as_json_loads_reads_it(
    text: str, encoding: str, max_depth: int
) -> None:
    _assert_as_json_loads(_encoded(text, encoding), max_depth)


@_SETTINGS
@given(raw=st.binary(max_size=64))
def test_any_bytes_read_as_json_loads_reads_them(raw: bytes) -> None:
    _assert_as_json_loads(raw, MAX_JSON_DEPTH)


@pytest.mark.parametrize(
    "encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le", "utf-32-be"]
)
@pytest.mark.parametrize(
    "hiding",
    [
        '"\u4e22"',  # a code unit holding a quote byte (0x22) opens a "string" in the byte count
        '"\u2200"',
        '"\\""',  # an escaped quote: its backslash escapes the NUL byte after it, not the quote
    ],
)
def test_a_deep_body_in_utf16_or_utf32_is_refused_as_too_deep(encoding: str, hiding: str) -> None:
    deep = "[" * 5000 + "]" * 5000
    raw = f"[{hiding}, {deep}, {hiding}]".encode(encoding)
    with pytest.raises(UntrustedInputError, match="nested deeper than 64 levels"):
        loads_json(raw)


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_shallow_body_of_bracket_like_characters_in_utf16_is_read(encoding: str) -> None:
    # 160 bracket bytes in strings, depth 1; the first string's quote byte shifted the old count
    text = json.dumps(["\u4e22", "\u5b5b\u7b7b" * 40], ensure_ascii=False)
    assert loads_json(text.encode(encoding)) == json.loads(text.encode(encoding))


def test_too_deep_is_refused_before_a_utf8_body_is_decoded() -> None:
    """As before: a deep body is refused as too deep even when it is not UTF-8 either (the
    gateway answers that refusal itself, a 400 naming the body)."""
    raw = b'{"a": "\xff", "b": ' + b"[" * 100 + b"]" * 100 + b"}"
    with pytest.raises(UntrustedInputError, match="nested deeper"):
        loads_json(raw)
    with pytest.raises(UnicodeDecodeError):
        loads_json(b'{"a": "\xff"}')
