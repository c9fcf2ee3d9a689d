"""Decode Stripe's form encoding (`metadata[k]=v`, `expand[0]=x`, `items[0][a]=b`) and read params."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import unquote

from stripe_sandbox.errors import StripeAPIError, invalid_param, missing_param

_KEY_PART = re.compile(r"\[([^\[\]]*)\]")

# Containers whose keys are free text: never turned into lists even when all keys are digits.
_FREE_KEY_CONTAINERS = frozenset({"metadata"})


def parse_form(body: str) -> dict[str, Any]:
    """Turn a form-encoded body or query string into nested dicts and lists."""
    return decode_pairs(form_pairs(body))


# Field names as decoded and as split into their parts, by their encoded text: a client sends
# the same few names in every request (`metadata%5Bjob_id%5D`), never worth decoding twice.
_NAMES: dict[str, str] = {}
_PARTS: dict[str, tuple[str, ...]] = {}
_KEPT_NAMES = 4096  # (a bound on what strangers' names can make the caches hold)


def _unquote_plus(text: str) -> str:
    return unquote(text.replace("+", " ")) if "%" in text or "+" in text else text


def form_pairs(body: str) -> list[tuple[str, str]]:
    """The (name, value) pairs of a form body, decoded as `parse_qsl(body,
    keep_blank_values=True)` decodes them (the same list), with each distinct name decoded once
    per process and values with nothing to decode left as they are."""
    pairs = []
    for field in body.split("&"):
        if not field:
            continue
        raw, _, value = field.partition("=")
        name = _NAMES.get(raw)
        if name is None:
            name = _unquote_plus(raw)
            if len(_NAMES) < _KEPT_NAMES:
                _NAMES[raw] = name
        pairs.append((name, _unquote_plus(value) if "%" in value or "+" in value else value))
    return pairs


def _parts(name: str) -> tuple[str, ...]:
    """`a[b][0]` as ("a", "b", "0"); `a[]` ends in "" (append)."""
    parts = _PARTS.get(name)
    if parts is None:
        head, _, rest = name.partition("[")
        parts = (head, *_KEY_PART.findall("[" + rest)) if rest else (head,)
        if len(_PARTS) < _KEPT_NAMES:
            _PARTS[name] = parts
    return parts


def decode_pairs(pairs: Iterable[tuple[str, str]]) -> dict[str, Any]:
    """Nest `a[b][0][c]=v` pairs; `a[]=v` appends; digit-keyed dicts become lists."""
    root: dict[str, Any] = {}
    nested = False
    for name, value in pairs:
        parts = _parts(name)
        node: dict[str, Any] = root
        for part in parts[:-1]:
            nested = True
            if part == "":
                part = str(sum(1 for k in node if k.isdigit()))
            child = node.get(part)
            if child.__class__ is not dict:
                child = node[part] = {}
            node = child
        last = parts[-1]
        if last == "":
            last = str(sum(1 for k in node if k.isdigit()))
        node[last] = value
    if not nested and not any(key.isdigit() for key in root):
        return root  # (nothing to turn into a list)
    return _listify(root, parent="")  # type: ignore[no-any-return]


def _listify(node: dict[str, Any], parent: str) -> Any:
    converted = {
        key: _listify(value, key) if value.__class__ is dict else value
        for key, value in node.items()
    }
    if converted and parent not in _FREE_KEY_CONTAINERS and all(key.isdigit() for key in converted):
        return [converted[key] for key in sorted(converted, key=int)]
    return converted


class Params:
    """Typed, Stripe-worded access to one level of request parameters."""

    def __init__(self, data: Mapping[str, Any], prefix: str = "") -> None:
        self.data = data
        self.prefix = prefix

    def _name(self, key: str) -> str:
        return f"{self.prefix}[{key}]" if self.prefix else key

    def __contains__(self, key: str) -> bool:
        return key in self.data

    def raw(self, key: str) -> Any:
        return self.data.get(key)

    def text(self, key: str, *, required: bool = False, max_length: int = 5000) -> str | None:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise missing_param(self._name(key))
            return None
        if not isinstance(value, str):
            raise invalid_param(
                f"Invalid string: {value!r}", param=self._name(key), code="parameter_invalid_string"
            )
        if len(value) > max_length:
            raise invalid_param(
                f"Invalid string: {value[:20]}...; must be at most {max_length} characters",
                param=self._name(key),
                code="parameter_invalid_string",
            )
        return value

    def integer(
        self, key: str, *, required: bool = False, minimum: int | None = None
    ) -> int | None:
        value = self.data.get(key)
        if value is None or value == "":
            if required:
                raise missing_param(self._name(key))
            return None
        if not isinstance(value, str) or not re.fullmatch(r"-?\d+", value):
            raise invalid_param(
                f"Invalid integer: {value}", param=self._name(key), code="parameter_invalid_integer"
            )
        number = int(value)
        if minimum is not None and number < minimum:
            raise invalid_param(
                f"This value must be greater than or equal to {minimum}.",
                param=self._name(key),
                code="parameter_invalid_integer",
            )
        return number

    def boolean(self, key: str, default: bool = False) -> bool:
        value = self.data.get(key)
        if value is None or value == "":
            return default
        if value in ("true", "false"):
            return value == "true"
        raise invalid_param(
            f"Invalid boolean: {value}", param=self._name(key), code="parameter_invalid_boolean"
        )

    def enum(self, key: str, choices: Iterable[str], *, default: str | None = None) -> str | None:
        value = self.text(key)
        if value is None:
            return default
        allowed = list(choices)
        if value not in allowed:
            raise invalid_param(
                f"Invalid {self._name(key)}: must be one of {', '.join(allowed)}",
                param=self._name(key),
            )
        return value

    def currency(self, key: str, *, required: bool = False) -> str | None:
        value = self.text(key, required=required)
        if value is None:
            return None
        if not re.fullmatch(r"[A-Za-z]{3}", value):
            raise invalid_param(f"Invalid currency: {value}.", param=self._name(key))
        return value.lower()

    def sub(self, key: str) -> Params:
        """The nested parameters under `key` (empty when absent)."""
        value = self.data.get(key)
        if value is None or value == "":
            return Params({}, self._name(key))
        if not isinstance(value, dict):
            raise invalid_param(f"Invalid object: {self._name(key)}", param=self._name(key))
        return Params(value, self._name(key))

    def items(self, key: str) -> list[Params]:
        """An array of objects such as `line_items[0][quantity]`."""
        value = self.data.get(key)
        if value is None or value == "":
            return []
        if isinstance(value, dict):  # a single object sent without an index
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise invalid_param(f"Invalid array: {self._name(key)}", param=self._name(key))
        return [Params(v, f"{self._name(key)}[{i}]") for i, v in enumerate(value)]

    def strings(self, key: str) -> list[str]:
        """An array of strings such as `expand[0]=a` or `enabled_events[]=b`."""
        value = self.data.get(key)
        if value is None or value == "":
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, dict):
            value = list(value.values())
        if not all(isinstance(v, str) for v in value):
            raise invalid_param(f"Invalid array: {self._name(key)}", param=self._name(key))
        return list(value)

    def metadata(self, key: str = "metadata") -> dict[str, str] | None:
        """Metadata as sent: None when absent, {} when cleared with `metadata=`."""
        if key not in self.data:
            return None
        value = self.data[key]
        if value == "":
            return {}
        if not isinstance(value, dict):
            raise invalid_param("Invalid metadata: must be an object.", param=key)
        if len(value) > 50:
            raise invalid_param("Metadata can have at most 50 keys.", param=key)
        for meta_key, meta_value in value.items():
            if not isinstance(meta_value, str):
                raise invalid_param(f"Invalid metadata value for {meta_key}.", param=key)
            if len(meta_key) > 40:
                raise invalid_param(
                    "Metadata keys can have at most 40 characters.", param=f"{key}[{meta_key}]"
                )
            if len(meta_value) > 500:
                raise invalid_param(
                    "Metadata values can have at most 500 characters.",
                    param=f"{key}[{meta_key}]",
                )
        return dict(value)


def merge_metadata(current: dict[str, str], update: dict[str, str] | None) -> dict[str, str]:
    """Stripe's update rule: keys merge, an empty value unsets a key, `metadata=` clears all."""
    if update is None:
        return current
    if not update:
        return {}
    merged = dict(current)
    for key, value in update.items():
        if value == "":
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def require(condition: bool, error: StripeAPIError) -> None:
    """Raise `error` unless `condition` holds."""
    if not condition:
        raise error
