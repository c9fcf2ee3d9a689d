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
from json.encoder import encode_basestring_ascii
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


def dumps_indented(value: Any) -> str:
    """`json.dumps(value, indent=2)`, the same text."""
    parts: list[str] = []
    try:
        _write(value, parts, "\n")
    except (_Unusual, RecursionError):
        return json.dumps(value, indent=2)
    return "".join(parts)


def _atom(value: Any) -> str:
    """An atom as json writes it; _Unusual for anything else."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if kind is int:
        return int.__repr__(value)
    if kind is float and value == value and value not in (float("inf"), float("-inf")):
        return float.__repr__(value)
    raise _Unusual


def _write(value: Any, out: list[str], newline: str) -> None:
    kind = type(value)
    if kind is dict:
        if not value:
            out.append("{}")
            return
        inner = newline + "  "
        separator = "{" + inner
        for key, item in value.items():
            if type(key) is not str:
                raise _Unusual
            out.append(separator)
            out.append(encode_basestring_ascii(key))
            out.append(": ")
            if type(item) in _ATOMIC:
                out.append(_atom(item))
            else:
                _write(item, out, inner)
            separator = "," + inner
        out.append(newline + "}")
    elif kind is list:
        if not value:
            out.append("[]")
            return
        inner = newline + "  "
        separator = "[" + inner
        for item in value:
            out.append(separator)
            if type(item) in _ATOMIC:
                out.append(_atom(item))
            else:
                _write(item, out, inner)
            separator = "," + inner
        out.append(newline + "]")
    else:
        out.append(_atom(value))
