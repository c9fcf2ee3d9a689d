"""loads_json parses a text with the JSON decoder's C scanner directly, as `json.loads` would
(JSONDecoder.decode), without its three Python wrappers (issue 13: every JSON body at the
gateway's edge, three per posting with its webhook deliveries): the same values, the same
refusals with the same message and position."""

from __future__ import annotations

import json
import pstats
from typing import Any

import pytest

from hirepay_platform.untrusted import loads_json
from tests.support.python_calls import profiled

TEXTS = [
    '{"a": [1, 2.5, -3e2, true, false, null], "b": {"c": "d\\u00e9"}}',
    "  \n\t[1]  \r\n",
    "1",
    '"x"',
    "NaN",
    "-Infinity",
    '{"a": 1, "a": 2}',
    "",
    "   ",
    "[1] [2]",
    "[1,]",
    '{"a" 1}',
    "\ufeff[1]",
    "[1",
    "tru",
    '"\\x"',
    '{"a": 1}x',
    "[" * 10 + "]" * 10,
]


def _outcome(parse: Any, text: str) -> Any:
    try:
        return ("value", repr(parse(text)))
    except json.JSONDecodeError as exc:
        return ("error", type(exc).__name__, exc.msg, exc.pos, exc.doc)


@pytest.mark.parametrize("text", TEXTS)
def test_a_text_parses_as_json_loads_parses_it(text: str) -> None:
    assert _outcome(loads_json, text) == _outcome(json.loads, text)
    raw = text.encode("utf-8")
    assert _outcome(loads_json, raw) == _outcome(json.loads, raw)


def test_a_document_is_parsed_without_json_loads_python_wrappers() -> None:
    raw = json.dumps({"title": "Engineer", "tags": ["a", "b"], "n": 3}).encode()
    loads_json(raw)  # (warm)
    with profiled() as profile:
        value = loads_json(raw)
    assert value == {"title": "Engineer", "tags": ["a", "b"], "n": 3}
    stats = pstats.Stats(profile)
    entered = {name for (_, _, name) in stats.stats}  # type: ignore[attr-defined]
    assert not entered & {"loads", "decode", "raw_decode"}, sorted(entered)
    # (measured: 20 calls through json.loads, 16 now; the profiler's disable() counted too)
    assert stats.total_calls <= 16, stats.total_calls  # type: ignore[attr-defined]
