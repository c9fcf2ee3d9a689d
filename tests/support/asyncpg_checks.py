"""How many abstract-class checks asyncpg made in Python while a profile ran (taken with
`python_calls.profiled()`): one per element of an array parameter it encodes (issue 13), the cost
that binding lists as joined strings avoids."""

from __future__ import annotations

import cProfile
import pstats


def asyncpg_abstract_checks(profile: cProfile.Profile) -> int:
    """Abstract-class checks made from asyncpg's execution (its Cython code has no frame of its
    own: the caller shown is the Python around it, asyncpg's, or the platform's hot statement run
    that calls asyncpg's protocol itself, db._execute_hot); others are not the parameters'."""
    return sum(
        n
        for (_, _, name), stats in pstats.Stats(profile).stats.items()  # type: ignore[attr-defined]
        if name == "__instancecheck__"
        for (caller, _, caller_name), (n, *_) in stats[4].items()
        if runs_the_driver(caller, caller_name)
    )


def runs_the_driver(file: str, function: str) -> bool:
    """Whether Python code in `file`, function `function`, runs asyncpg's execution: asyncpg's
    own, or the platform's hot statement run (db._execute_hot), which calls asyncpg's protocol
    itself (round 16). The Python caller of what asyncpg's Cython code asks."""
    file = file.replace("\\", "/")
    if "asyncpg" in file.split("/"):
        return True
    return file.endswith("hirepay_platform/db.py") and function == "_execute_hot"
