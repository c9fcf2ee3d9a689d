"""new_id's random part is a version 4 UUID's hex, as uuid.uuid4().hex wrote it, made without a
UUID object (issue 13, pay13: 9 -> 3 Python calls per id, a few ids per posting)."""

from __future__ import annotations

import pstats
import re
import uuid

from hirepay_platform.ids import new_id
from tests.support.python_calls import profiled


def test_the_random_part_is_a_version_4_uuid_in_hex() -> None:
    seen = set()
    for _ in range(2000):
        found = re.fullmatch(r"pay_([0-9a-f]{32})", new_id("pay"))
        assert found is not None
        digits = found.group(1)
        parsed = uuid.UUID(hex=digits)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
        assert parsed.hex == digits
        seen.add(digits)
    assert len(seen) == 2000


def test_every_random_bit_varies() -> None:
    # The 122 bits that are not the version's or the variant's are each seen 0 and 1.
    values = [int(new_id("x")[2:], 16) for _ in range(400)]
    fixed = (0xF << 76) | (0x3 << 62)
    ones = 0
    zeros = 0
    for value in values:
        ones |= value
        zeros |= ~value
    assert ones & ~fixed == zeros & ~fixed & ((1 << 128) - 1) == ((1 << 128) - 1) & ~fixed


def test_no_uuid_object_is_made() -> None:
    new_id("warm")
    with profiled() as profile:
        new_id("job")
    stats = pstats.Stats(profile).stats  # type: ignore[attr-defined]
    called = {name for (_, _, name) in stats}
    assert not called & {"uuid4", "__init__", "hex"}, called
