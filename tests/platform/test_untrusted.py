"""The shared checks of untrusted input (hirepay_platform.untrusted) and the places in the
platform that parse client data with them: page tokens, validators anchored to the whole string."""

from __future__ import annotations

import ast
import base64
import re
import unicodedata
from pathlib import Path

import pytest

from hirepay.jobs.v1 import jobs_service_pb2 as jobs_pb
from hirepay_dev.procs import REPO_ROOT
from hirepay_platform import money, paging
from hirepay_platform.errors import ValidationError
from hirepay_platform.server import message_text_problem
from hirepay_platform.untrusted import (
    MAX_JSON_DEPTH,
    UntrustedInputError,
    loads_json,
    text_problem,
    visible_length,
)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("fine text, ünïcode ✓", None),
        ("a\x00b", "must not contain NUL characters"),
        ("lone \ud800 surrogate", "invalid Unicode"),
        ("\udfff", "invalid Unicode"),
    ],
)
def test_text_problem(text: str, problem: str | None) -> None:
    assert text_problem(text) == problem


@pytest.mark.parametrize(
    ("text", "length"),
    [
        ("\u200b\u200b\u200b", 0),  # zero-width spaces
        ("\u200d\ufeff\u2060\u200e", 0),  # joiner, BOM, word joiner, LTR mark
        ("  \t\n", 0),
        ("Dev", 3),
        ("D\u200be\u200bv", 3),
        ("Café 🚀", 5),
    ],
)
def test_visible_length_ignores_invisible_characters(text: str, length: int) -> None:
    assert visible_length(text) == length


def _seen_one_by_one(text: str) -> int:
    """visible_length's rule applied to each character (what its ASCII fast path must match)."""
    return sum(1 for ch in text if not ch.isspace() and unicodedata.category(ch)[0] not in "CZ")


@pytest.mark.parametrize(
    "text",
    [
        *map(chr, range(128)),
        "".join(map(chr, range(128))),
        "Senior Python Engineer\t(remote)\r\n",
        " \t\r\n\x0b\x0c\x1c\x1d\x1e\x1f\x7f ",
        "caf\u00e9 \u200b\u200d\ufeff \u2060x",
    ],
)
def test_visible_length_counts_ascii_as_each_character_is_judged(text: str) -> None:
    # ASCII text is counted in C (issue 13): the same count as the rule character by character.
    assert visible_length(text) == _seen_one_by_one(text)


@pytest.mark.parametrize("depth", [MAX_JSON_DEPTH + 1, 5_000, 200_000])
def test_deep_json_is_refused_before_parsing(depth: int) -> None:
    with pytest.raises(UntrustedInputError, match="nested deeper"):
        loads_json(b"[" * depth + b"]" * depth)
    with pytest.raises(UntrustedInputError):
        loads_json('{"a":' * depth + "1" + "}" * depth)


def test_brackets_inside_strings_do_not_count_and_shallow_json_parses() -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    assert loads_json(nested) is not None
    assert loads_json('{"title": "' + "[" * 1000 + '\\"{"}') == {"title": "[" * 1000 + '"{'}


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ('{"job": {"title": "a\\u0000b"}}', "job.title"),
        ('{"email": "\\ud800@x.io"}', "email"),
        ('{"list": ["ok", "\\u0000"]}', "list[1]"),
        ('{"k\\u0000": 1}', "k"),
    ],
)
def test_nul_and_lone_surrogates_anywhere_in_json_are_refused(raw: str, field: str) -> None:
    with pytest.raises(UntrustedInputError) as caught:
        loads_json(raw)
    assert caught.value.field == field


def test_escaped_backslashes_and_bytes_with_valid_text_parse() -> None:
    """Text that only looks like a forbidden escape (an escaped backslash before `u0000`) is
    fine; bytes are decoded as json.loads decodes them (a UTF-8 BOM included)."""
    assert loads_json('{"a": "\\\\u0000 \\\\ud800"}') == {"a": "\\u0000 \\ud800"}
    assert loads_json('{"é": [1]}'.encode("utf-8-sig")) == {"é": [1]}
    assert loads_json('{"é": "ü"}'.encode("utf-16")) == {"é": "ü"}
    with pytest.raises(UntrustedInputError):
        loads_json('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"))


def test_malformed_json_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        loads_json(b"{not json")


def test_message_text_problem_walks_nested_and_repeated_fields() -> None:
    ok = jobs_pb.UpdateDraftRequest(job_id="job_1", fields=jobs_pb.JobFields(title="Fine"))
    assert message_text_problem(ok) is None
    nested = jobs_pb.UpdateDraftRequest(fields=jobs_pb.JobFields(location="Ber\x00lin"))
    assert message_text_problem(nested) == ("fields.location", "must not contain NUL characters")
    repeated = jobs_pb.UpdateDraftRequest(update_mask={"paths": ["title", "x\x00"]})
    assert message_text_problem(repeated) == (
        "update_mask.paths",
        "must not contain NUL characters",
    )


@pytest.mark.parametrize("depth", [100, 1_500])
def test_a_crafted_deep_page_token_is_invalid_not_a_crash(depth: int) -> None:
    token = base64.urlsafe_b64encode(b"[" * depth + b"]" * depth).decode().rstrip("=")
    with pytest.raises(ValidationError):
        paging.decode_token(token)


def test_currency_codes_are_matched_whole() -> None:
    assert money.is_cash("USD")
    assert not money.is_cash("USD\n")


# `re.compile(r"^...$")` + `.match` accepts "value\n": `$` also matches before a final newline.
# Validators use `fullmatch` (or `\Z`); this keeps the whole code base to that rule.
def _dollar_anchored_patterns() -> list[str]:
    found: list[str] = []
    roots = [REPO_ROOT / "libs", REPO_ROOT / "services", REPO_ROOT / "sandbox"]
    for path in sorted(p for root in roots for p in root.rglob("*.py")):
        tree = ast.parse(Path(path).read_text(), filename=str(path))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("compile", "match", "search")
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
                and re.search(r"(?<!\\)\$$", node.args[0].value)
            ):
                found.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    return found


def test_no_validator_is_anchored_with_dollar() -> None:
    assert _dollar_anchored_patterns() == []


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        # Bytes: the forms the quick path must never wave through.
        (b'{"job": {"title": "a\\u0000b"}}', "job.title"),
        (b'{"email": "\\uD800@x.io"}', "email"),
        (b'{"name": "\xed\xa0\x80"}', "name"),  # a lone surrogate written raw (CESU-8)
        ('{"t": "x"}'.encode("utf-16"), None),  # UTF-16 with a BOM is parsed too: walked
        ('{"t": "\\u0000"}'.encode("utf-32-le"), "t"),
    ],
)
def test_forbidden_text_is_found_in_bytes_in_every_encoding_json_reads(
    raw: bytes, field: str | None
) -> None:
    if field is None:
        assert loads_json(raw) == {"t": "x"}
        return
    with pytest.raises(UntrustedInputError) as caught:
        loads_json(raw)
    assert caught.value.field == field


def test_escaped_backslashes_hangul_and_bracket_counts_are_not_false_alarms() -> None:
    assert loads_json(b'{"a": "\\\\u0000"}') == {"a": "\\u0000"}
    assert loads_json('{"a": "\\\\u0000"}') == {"a": "\\u0000"}
    assert loads_json('{"a": "한국"}'.encode()) == {"a": "한국"}
    # Exactly the limit of openers (some inside a string) and exactly the limit of nesting.
    at_limit = "[" * (MAX_JSON_DEPTH - 1) + '"{"' + "]" * (MAX_JSON_DEPTH - 1)
    assert loads_json(at_limit.encode()) is not None
    deepest = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert loads_json(deepest.encode()) is not None
    with pytest.raises(UntrustedInputError, match="nested deeper"):
        loads_json(("[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1)).encode())
