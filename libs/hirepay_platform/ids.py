"""Identifier helpers: prefixed random ids that say what they name."""

import uuid


def new_id(prefix: str) -> str:
    """A new random id such as `txn_5f0c...`; the prefix names the resource type."""
    return f"{prefix}_{uuid.uuid4().hex}"
