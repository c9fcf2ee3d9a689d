"""README.md "Service-to-service authentication" names exactly the RPCs each service's access
policy (`ACCESS` in entrypoints/main.py) restricts to one caller."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def section() -> str:
    text = README.read_text()
    start = text.index("## Service-to-service authentication")
    return " ".join(text[start : text.index("\n## ", start + 1)].split())


def named_before(text: str, marker: str) -> set[str]:
    """The CamelCase RPC names of the list that ends with `marker` (e.g. "only jobs")."""
    head = text[: text.index(marker)]
    head = re.split(r"[(;]", head)[-1]
    return set(re.findall(r"\b[A-Z][A-Za-z]+\b", head))


@pytest.mark.parametrize(
    ("service", "marker", "caller"),
    [
        ("payments", "only jobs;", "jobs"),
        ("payments", "only the gateway)", "gateway"),
        ("wallet", "only jobs)", "jobs"),
    ],
)
def test_the_rpcs_restricted_to_one_caller_are_named(
    service: str, marker: str, caller: str
) -> None:
    access = importlib.import_module(f"{service}.entrypoints.main").ACCESS
    restricted = {name for name, who in access.per_method.items() if who == {caller}}
    text = section()
    part = text[text.index(f"{service} accepts") :]
    assert named_before(part, marker) == restricted
