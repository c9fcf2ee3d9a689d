"""sandbox_kit.jsondata: the same copies as copy.deepcopy and the same text as
json.dumps(indent=2), for provider-shaped data and for whatever else ends up inside it."""

from __future__ import annotations

import copy
import json
import random
from enum import StrEnum
from typing import Any

import pytest

from sandbox_kit.jsondata import copy_json, dumps_indented

PAYMENT_INTENT: dict[str, Any] = {
    "id": "pi_3Q0abc",
    "object": "payment_intent",
    "amount": 2500,
    "amount_details": {"tip": {}},
    "charges": [],
    "metadata": {"job_id": "j_1", "note": 'Zürich \u2028 "quoted" \\ \x00'},
    "payment_method_types": ["card"],
    "last_payment_error": None,
    "livemode": False,
    "confirm": True,
    "rate": 0.035,
    "big": 2**70,
    "negative": -0.0,
}


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth < 4 and pick < 0.2:
        keys = ["a", "b", "é", "\n", *(f"k{n}" for n in range(5))]
        return {rng.choice(keys): _random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}
    if depth < 4 and pick < 0.35:
        return [_random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    atoms = [None, True, False, 0, -5, 2**70, 1.5, 1e300, -0.0, "", "x", 'üñí\u2028"\\', "\x00"]
    return rng.choice(atoms)


def test_indented_json_is_the_standard_text() -> None:
    assert dumps_indented(PAYMENT_INTENT) == json.dumps(PAYMENT_INTENT, indent=2)
    rng = random.Random(13)
    for _ in range(3000):
        value = _random_value(rng)
        assert dumps_indented(value) == json.dumps(value, indent=2)


def test_unusual_values_are_written_or_refused_as_json_does() -> None:
    class Kind(StrEnum):
        CARD = "card"

    for value in (
        float("nan"),
        {"a": float("-inf")},
        {1: 2, False: None, 2.5: 1},
        {"a": (1, 2)},
        Kind.CARD,
    ):
        assert dumps_indented(value) == json.dumps(value, indent=2)
    with pytest.raises(TypeError):
        dumps_indented({"a": object()})
    looping: dict[str, Any] = {}
    looping["self"] = looping
    with pytest.raises(ValueError, match="Circular reference"):
        dumps_indented(looping)


def test_copies_are_deep_and_equal() -> None:
    copied = copy_json(PAYMENT_INTENT)
    assert copied == copy.deepcopy(PAYMENT_INTENT)
    copied["metadata"]["job_id"] = "changed"
    copied["payment_method_types"].append("us_bank_account")
    assert PAYMENT_INTENT["metadata"]["job_id"] == "j_1"
    assert PAYMENT_INTENT["payment_method_types"] == ["card"]
    rng = random.Random(7)
    for _ in range(1000):
        value = _random_value(rng)
        assert copy_json(value) == value


def test_other_objects_inside_are_deep_copied_as_deepcopy_would() -> None:
    class Outcome:
        def __init__(self, codes: list[str]) -> None:
            self.codes = codes

    original = {"outcome": Outcome(["card_declined"]), "pair": (1, [2])}
    copied = copy_json(original)
    assert copied["outcome"] is not original["outcome"]
    assert copied["outcome"].codes == ["card_declined"]
    assert copied["pair"] == (1, [2]) and copied["pair"][1] is not original["pair"][1]
