"""How many abstract-class checks asyncpg made in Python while a profile ran (taken with
`python_calls.profiled()`): one per element of an array parameter it encodes (issue 13), the cost
that binding lists as joined strings avoids."""

from __future__ import annotations

import cProfile
import pstats


def asyncpg_abstract_checks(profile: cProfile.Profile) -> int:
    """Abstract-class checks made from asyncpg's execution (its Cython code has no frame of its
    own: the caller shown is asyncpg's Python around it); others are not the parameters'."""
    return sum(
        n
        for (_, _, name), stats in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
        if name == "__instancecheck__"
        for (caller, _, _), (n, *_) in stats[4].items()
        if "asyncpg" in caller.replace("\\", "/").split("/")
    )
