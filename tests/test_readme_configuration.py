"""README.md "Configuration" and the services' READMEs describe exactly the settings the code reads.

Every variable a settings class reads (the four services' `entrypoints/settings.py` and the
platform's common ones) is documented, in README.md or its service's README (whose tables name
variables without the prefix), with the default the code has where a row states one; and every
variable README.md's Configuration section names is read by some code.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from tests.deploy.test_manifests import SETTINGS_CLASSES, settings_class

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
# Where code outside the settings classes reads its variables (the dev tools, tracing, sandboxes).
CODE_ROOTS = [REPO / "libs", REPO / "services", REPO / "tools", REPO / "sandbox"]
NAME = re.compile(r"`([A-Z][A-Z0-9_]*[A-Z0-9])`")


def variables_read(cls: Any) -> dict[str, Any]:
    """Variable name -> the field's default (None when required or computed)."""
    prefix = cls.model_config.get("env_prefix", "")
    found: dict[str, Any] = {}
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        default = None if field.is_required() or field.default_factory else field.default
        if alias is None:
            found[f"{prefix}{field_name}".upper()] = default
        else:
            choices = [alias] if isinstance(alias, str) else alias.choices
            for choice in choices:
                found[str(choice)] = default
    return found


def configuration_section() -> str:
    text = README.read_text()
    start = text.index("\n## Configuration")
    return text[start : text.index("\n## ", start + 1)]


def documented_names(text: str) -> set[str]:
    """Every backticked upper-case name in `text`."""
    return set(NAME.findall(text))


def is_documented(variable: str, prefix: str, top: str, service: str) -> bool:
    rest = variable.removeprefix(prefix)
    return (
        variable in documented_names(top) | documented_names(service)
        # The service READMEs' tables name variables without the service prefix.
        or (variable.startswith(prefix) and rest in documented_names(service))
        # README.md's common settings: `<SVC>_LOG_LEVEL`, `<PREFIX>METRICS_HOST`.
        or f"`<SVC>_{rest}`" in top
        or f"`<PREFIX>{rest}`" in top
    )


@pytest.mark.parametrize("service", sorted(SETTINGS_CLASSES))
def test_every_setting_read_is_documented(service: str) -> None:
    cls = settings_class(service)
    prefix = cls.model_config.get("env_prefix", "")
    top = README.read_text()
    own = (REPO / "services" / service / "README.md").read_text()
    missing = [v for v in variables_read(cls) if not is_documented(v, prefix, top, own)]
    assert missing == [], f"read by {cls.__name__}, documented nowhere: {missing}"


def table_rows(text: str) -> list[tuple[str, str]]:
    """(variable cell, default cell) of every `| variable | default | meaning |` row."""
    rows = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and NAME.search(cells[0]):
            rows.append((cells[0], cells[1]))
    return rows


def as_value(text: str) -> str | None:
    """A default cell's literal (`USD:100`, 8, 0.5, 127.0.0.1:50051), or None for prose."""
    literal = text.strip().strip("`").strip()
    return literal if re.fullmatch(r"[\w.:/-]+", literal) else None


def same(documented: str, actual: Any) -> bool:
    if isinstance(actual, SecretStr):
        actual = actual.get_secret_value()
    if isinstance(actual, bool):
        return documented.lower() in (("true", "on") if actual else ("false", "off"))
    if actual == "" and documented.lower() in ("empty", "none"):
        return True
    if isinstance(actual, str):
        # A row's shorthand for the same host (`127.0.0.1:50052 / :50051`).
        return documented == actual or (documented.startswith(":") and actual.endswith(documented))
    if not isinstance(actual, int | float):
        return documented == str(actual)
    try:
        return float(documented) == float(actual)
    except ValueError:
        return False


def documented_defaults(text: str, prefix: str) -> dict[str, str]:
    """Variable -> documented default, from rows pairing names and defaults one to one."""
    found: dict[str, str] = {}
    for names_cell, default_cell in table_rows(text):
        names = NAME.findall(names_cell)
        defaults = [as_value(d) for d in re.split(r",\s*|\s+/\s+", default_cell)]
        if len(names) != len(defaults):
            continue
        for name, default in zip(names, defaults, strict=True):
            if default is not None:
                full = name if name.startswith(prefix) or "_" not in name else prefix + name
                found[full] = default
    return found


@pytest.mark.parametrize("service", sorted(SETTINGS_CLASSES))
def test_documented_defaults_are_the_codes(service: str) -> None:
    cls = settings_class(service)
    prefix = cls.model_config.get("env_prefix", "")
    read = variables_read(cls)
    documented = documented_defaults(configuration_section(), prefix)
    documented |= documented_defaults(
        (REPO / "services" / service / "README.md").read_text(), prefix
    )
    checked = {v: d for v, d in documented.items() if v in read and read[v] is not None}
    assert checked, "no documented default found to check"
    wrong = {v: (d, read[v]) for v, d in checked.items() if not same(d, read[v])}
    assert wrong == {}, f"documented default != code default: {wrong}"


def code_text() -> str:
    return "\n".join(
        path.read_text()
        for root in CODE_ROOTS
        for path in root.rglob("*.py")
        if "tests" not in path.parts
    )


def test_every_variable_readme_configures_is_read() -> None:
    every_setting: set[str] = set()
    for service in SETTINGS_CLASSES:
        every_setting |= set(variables_read(settings_class(service)))
    source = code_text()
    unread = [
        name
        for name in sorted(documented_names(configuration_section()))
        if name not in every_setting
        # Read outside a settings class: by name in the code (e.g. tracing's switches, the dev
        # tools' DATABASE_URL); OTEL_* are the OpenTelemetry SDK's own.
        and f'"{name}"' not in source
        and not name.startswith("OTEL_")
    ]
    assert unread == [], f"README names variables no code reads: {unread}"


def test_the_checks_are_real() -> None:
    """A made-up variable is neither documented nor read; a wrong default is caught."""
    assert not is_documented("PAYMENTS_MADE_UP_SECONDS", "PAYMENTS_", README.read_text(), "")
    assert not same("9", 8.0)
    assert not same("true", False) and not same("empty", "x")
    assert same("0.5", 0.5) and same("USD:100", "USD:100")


# Prefixes of the variables Hirepay's own processes read (the sandboxes' are their README's).
OWN_PREFIXES = ("WALLET_", "PAYMENTS_", "JOBS_", "GATEWAY_", "HIREPAY_")


def test_every_hirepay_variable_named_anywhere_in_the_readme_is_read() -> None:
    """The "Running against real Stripe / PayPal, Razorpay and Fatora" steps included: each
    `export PAYMENTS_...` and each variable a sentence names is one the code reads."""
    every_setting: set[str] = set()
    for service in SETTINGS_CLASSES:
        every_setting |= set(variables_read(settings_class(service)))
    source = code_text()
    pattern = r"\b((?:" + "|".join(OWN_PREFIXES) + r")[A-Z0-9_]*[A-Z0-9])\b"
    named = set(re.findall(pattern, README.read_text()))
    unread = sorted(n for n in named if n not in every_setting and f'"{n}"' not in source)
    assert unread == [], f"README names variables no code reads: {unread}"


def test_stripe_listen_forwards_exactly_the_events_payments_acts_on() -> None:
    from payments.adapters.stripe_provider import WEBHOOK_EVENT_TYPES

    text = README.read_text()
    command = text[text.index("stripe listen --forward-to") :]
    command = command[: command.index("# prints whsec_")]
    listed = re.findall(r"[a-z_]+(?:\.[a-z_]+)+", command.split("--events", 1)[1])
    assert sorted(listed) == sorted(WEBHOOK_EVENT_TYPES)
