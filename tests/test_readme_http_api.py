"""README.md "HTTP API" lists every route the gateway serves, and names no route it does not.

The routes come from the routers `gateway.entrypoints.app.create_app` includes (found by reading
its `include_router` lines, so a new router is checked too); README writes path parameters as
`{id}`, and `/accept`, `/reject`, `/withdraw` after a full path stand for that path's siblings."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from fastapi.routing import APIRoute

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
APP = REPO / "services" / "gateway" / "gateway" / "entrypoints" / "app.py"


def served() -> set[tuple[str, str]]:
    """(METHOD, path with parameters as {id}) of every route the gateway serves."""
    routes: set[tuple[str, str]] = set()
    for module in re.findall(r"include_router\((\w+)\.router\)", APP.read_text()):
        router = importlib.import_module(f"gateway.entrypoints.{module}").router
        for route in router.routes:
            if isinstance(route, APIRoute):
                path = re.sub(r"\{[^}]+\}", "{id}", route.path)
                routes |= {(method, path) for method in route.methods if method != "HEAD"}
    return routes


def documented() -> set[tuple[str, str]]:
    """(METHOD, path) of every route the README's HTTP API table names."""
    text = README.read_text()
    table = text[text.index("\n## HTTP API") : text.index("\n## ", text.index("\n## HTTP API") + 1)]
    found: set[tuple[str, str]] = set()
    for row in table.splitlines():
        if not row.startswith("| `"):
            continue
        cell = row.split(" | ")[0]
        last = ""
        for methods, path in re.findall(r"`(?:([A-Z|\\]+) )?(/[^`?\s]*)", cell):
            if methods:
                path = re.sub(r"\{[^}]+\}", "{id}", path)
                last_methods = methods.replace("\\", "").split("|")
                last = path
            elif last:  # `/reject`: the sibling of the previous path
                path = last.rsplit("/", 1)[0] + path
            else:
                continue
            found |= {(m, path) for m in last_methods}
    return found


def test_every_route_is_in_the_readme() -> None:
    missing = sorted(served() - documented())
    assert missing == [], f"served but not in README's HTTP API: {missing}"


def test_the_readme_names_only_routes_that_exist() -> None:
    # /metrics is mounted as an ASGI app, not a FastAPI route.
    extra = sorted(documented() - served() - {("GET", "/metrics")})
    assert extra == [], f"in README's HTTP API but not served: {extra}"
