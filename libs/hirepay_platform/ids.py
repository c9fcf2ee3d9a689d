"""Identifier helpers: prefixed random ids that say what they name."""

import os


def new_id(prefix: str) -> str:
    """A new random id such as `txn_5f0c...`; the prefix names the resource type.

    The random part is a version 4 UUID's 32 hex digits, as `uuid.uuid4().hex` writes them (122
    random bits from os.urandom, the version and RFC 4122 variant bits set), made without
    building a UUID object: uuid4() and UUID.__init__ are eight Python calls, and every posting
    makes a few ids (issue 13)."""
    raw = bytearray(os.urandom(16))
    raw[6] = raw[6] & 0x0F | 0x40  # version 4
    raw[8] = raw[8] & 0x3F | 0x80  # variant RFC 4122 (10xx)
    return f"{prefix}_{raw.hex()}"
