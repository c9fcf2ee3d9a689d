"""A request's fingerprint in few Python calls (issue 13): a structured field's digest (a
Transfer's legs, a Reserve's metadata) went through `_field_digest`, `digest`, `canonical_json`
and `json.dumps`, which builds a new JSONEncoder on every call - 7 Python calls per digest; with
one encoder kept by the module and the steps in line, 3. Every grouped Transfer call digests its
legs. The canonical form is unchanged, byte for byte (stored fingerprints keep matching)."""

from __future__ import annotations

import json

import pytest

from hirepay_platform import fingerprint as fp
from tests.support.python_calls import calls_made

_VALUES = [
    [["a1", "b2", 100, "USD"], ["a1", "c3", 5, "USD"]],
    {"z": 1, "a": [True, None, -3], "é": "ü ✓", "m": {"y": "", "b": 0}},
    "plain",
    "",
    0,
    [],
    {},
    [1.5, -0.0],
]


@pytest.mark.parametrize("value", _VALUES)
def test_the_canonical_form_is_json_dumps_sorted_compact_utf8(value):
    expected = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert fp.canonical_json(value) == expected.encode()
    assert fp.digest(value) == fp.hashlib.sha256(expected.encode()).hexdigest()


def test_a_transfers_fingerprint_digests_its_legs_in_few_calls():
    legs = [["a1", "b2", 100, "USD"]]
    fields = {"operation": "Transfer", "legs": legs, "description": "", "metadata": {}}
    fp.fingerprint(fields)  # the scalar digests cached, as on a running wallet
    # Python and built-in calls: fingerprint, the scalar digests' cache, and the legs' digest
    # (_field_digest, encode, iterencode, the C encoder, sha256, str.encode, hexdigest); 16
    # with json.dumps and the three steps (4 Python calls more per Transfer).
    assert calls_made(lambda: fp.fingerprint(fields)) <= 12
