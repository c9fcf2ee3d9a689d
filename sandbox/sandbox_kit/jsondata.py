"""JSON-shaped data as the sandboxes keep and send it: deep copies (an event's snapshot of an
object, a resource embedded in another) and the indented JSON some providers write.

Both do what `copy.deepcopy` and `json.dumps(value, indent=2)` do, byte for byte, for dicts,
lists, strings, numbers, booleans and None, without the generality those pay for on every node
(deepcopy's memo and dispatch per value; the pure-Python generators json falls back to when it
indents): together they were a sixth of the Stripe sandbox's CPU per posting (issue 13). Anything
else found inside is handed to the standard functions, so their results and errors stay."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from json.encoder import c_make_encoder, encode_basestring_ascii  # type: ignore[attr-defined]
from typing import Any

_ATOMIC = frozenset({str, int, float, bool, type(None)})


def copy_json(value: Any) -> Any:
    """A deep copy of `value`; values other than dicts, lists and atoms are deep-copied by
    `copy.deepcopy` (sandbox-only objects kept beside the provider's fields)."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _ATOMIC else copy_json(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMIC else copy_json(v) for v in value]
    if kind in _ATOMIC:
        return value
    return copy.deepcopy(value)


class _Unusual(Exception):
    """Something only `json.dumps` knows how to write (or to refuse)."""


def _refuse(value: Any) -> Any:
    raise _Unusual


# json's C encoder, which writes no indentation itself but takes any item separator: with
# "," + newline + indent as the separator it writes the atoms of one container at one depth
# exactly as json.dumps(indent=2) does, in one call (None without the C accelerator).
_ENCODERS: dict[str, Callable[[Any, int], list[str]]] = {}


def _encoder(inner: str) -> Callable[[Any, int], list[str]]:
    encode = _ENCODERS.get(inner)
    if encode is None:
        if c_make_encoder is None:
            raise _Unusual
        encode = _ENCODERS[inner] = c_make_encoder(
            None, _refuse, encode_basestring_ascii, None, ": ", "," + inner, False, False, True
        )
    return encode


def dumps_indented(value: Any) -> str:
    """`json.dumps(value, indent=2)`, the same text.

    Each run of atoms in a dict or list is written by json's C encoder in one call, only the
    nesting by Python: written a node at a time, six calls or so per atom, Stripe's answers and
    event bodies were a quarter of the Stripe sandbox's Python calls per posting (issue 13)."""
    try:
        if value.__class__ in _ATOMIC:
            return "".join(_encoder("\n  ")(value, 0))
        return _text(value, "\n")
    except (_Unusual, RecursionError):
        return json.dumps(value, indent=2)


def _text(value: Any, newline: str) -> str:
    """A dict or list as json.dumps(indent=2) writes it where a line starts with `newline`."""
    kind = value.__class__
    if kind is dict:
        return _dict_text(value, newline) if value else "{}"
    if kind is list:
        return _list_text(value, newline) if value else "[]"
    raise _Unusual


def _dict_text(value: dict[Any, Any], newline: str) -> str:
    inner = newline + "  "
    encode = _encoder(inner)
    if not [None for item in value.values() if item.__class__ not in _ATOMIC]:
        return "{" + inner + "".join(encode(value, 0))[1:-1] + newline + "}"
    parts: list[str] = []
    run: dict[Any, Any] = {}
    for key, item in value.items():
        if item.__class__ in _ATOMIC:
            run[key] = item
            continue
        if key.__class__ is not str:
            raise _Unusual
        if run:
            parts.append("".join(encode(run, 0))[1:-1])
            run = {}
        parts.append(encode_basestring_ascii(key) + ": " + _text(item, inner))
    if run:
        parts.append("".join(encode(run, 0))[1:-1])
    return "{" + inner + ("," + inner).join(parts) + newline + "}"


def _list_text(value: list[Any], newline: str) -> str:
    inner = newline + "  "
    encode = _encoder(inner)
    if not [None for item in value if item.__class__ not in _ATOMIC]:
        return "[" + inner + "".join(encode(value, 0))[1:-1] + newline + "]"
    parts: list[str] = []
    run: list[Any] = []
    for item in value:
        if item.__class__ in _ATOMIC:
            run.append(item)
            continue
        if run:
            parts.append("".join(encode(run, 0))[1:-1])
            run = []
        parts.append(_text(item, inner))
    if run:
        parts.append("".join(encode(run, 0))[1:-1])
    return "[" + inner + ("," + inner).join(parts) + newline + "]"
