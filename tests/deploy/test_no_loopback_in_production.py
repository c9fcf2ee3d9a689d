"""In the Kubernetes manifests no setting keeps a development default that points at the loopback
interface (`127.0.0.1` / `localhost`): in a pod that address is the pod itself, so a peer target,
a listener, or a URL a customer's browser is sent to (Stripe's Connect onboarding return, a
checkout's cancel page) would lead nowhere. Each such setting is set by the service's ConfigMap."""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.test_manifests import SETTINGS_CLASSES, config_map, settings_class

LOOPBACK = ("127.0.0.1", "localhost")


def loopback_defaults(cls: Any) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return [
        f"{prefix}{name}".upper()
        for name, field in cls.model_fields.items()
        if isinstance(field.default, str) and any(host in field.default for host in LOOPBACK)
    ]


@pytest.mark.parametrize("service", sorted(SETTINGS_CLASSES))
def test_every_loopback_default_is_overridden(service: str) -> None:
    cls = settings_class(service)
    config = config_map(service)
    assert loopback_defaults(cls), "the check finds nothing to check"
    left = [name for name in loopback_defaults(cls) if name not in config]
    assert left == [], f"{service}: left at a loopback default in the manifests: {left}"
    pointing = [name for name in config if any(host in config[name] for host in LOOPBACK)]
    assert pointing == [], f"{service}: the ConfigMap points at loopback: {pointing}"
