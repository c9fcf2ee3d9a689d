"""List parameters bound as one comma-separated string and split by PostgreSQL (issue 13).

asyncpg encodes a list parameter element by element and asks of each, in Python, whether it is
itself an array (an isinstance against collections.abc's Iterable and Sized: 2-4 Python calls
per element, 30-45% of a hot statement's Python calls, ~0.45 us each on the 2-core machine); a
string is one parameter, split by PostgreSQL. `listed`/`joined` only for values whose text never
holds a comma: ids, units, kinds, amounts, validated branch ids. Free text and JSON, which may,
go as the text of an array literal (`quoted`/`quoted_list`: each value double-quoted), read by
PostgreSQL's own array input: the same array, and no per-element question asked in Python
(asyncpg's were 3 calls per array and 2 per element, plus SQLAlchemy's JSONB encoder once per
JSON element; issue 13, round 14)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def listed(name: str, sql_type: str) -> str:
    """The SQL of an array parameter bound as one comma-separated string (`joined`)."""
    return f"CAST(string_to_array(:{name}, ',') AS {sql_type}[])"


def joined(values: Iterable[object]) -> str:
    """A `listed` parameter's value: the values' text joined by commas ("" is the empty array).
    Only for values whose text has no comma and is never empty."""
    return ",".join(map(str, values))


def joined_checked(values: Sequence[str]) -> str:
    """`joined` of strings that must hold no comma and not be a lone "" (which would split
    into no element): checked on the whole text (two calls per list, none per value), a
    ValueError if one does, rather than a parameter PostgreSQL would split differently."""
    text = ",".join(values)
    if values and text.count(",") != len(values) - 1:
        raise ValueError("a listed value holds a comma")
    if values and not text:  # one value, ""
        raise ValueError("a listed value is empty")
    return text


def quoted(name: str, sql_type: str) -> str:
    """The SQL of an array parameter bound as the text of an array literal (`quoted_list`): a
    text parameter cast to the array type, which PostgreSQL reads with the type's array input."""
    return f"CAST(CAST(:{name} AS text) AS {sql_type}[])"


def quoted_list(values: Iterable[str]) -> str:
    """A `quoted` parameter's value: `{"v1","v2",...}`, each value in double quotes with its
    backslashes and double quotes escaped by a backslash, which is all an array literal's quoted
    element needs (array_in): commas, braces, spaces, an empty string or the text NULL are each
    one element, exactly as given. Any text (a description, a JSON document); no NULL elements."""
    return (
        "{"
        + ",".join(['"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"' for v in values])
        + "}"
    )
