"""In the Kubernetes manifests no setting keeps a development default that points at the loopback
interface (`127.0.0.1` / `localhost`): in a pod that address is the pod itself, so a peer target,
a listener, or a URL a customer's browser is sent to (Stripe's Connect onboarding return, a
checkout's cancel page) would lead nowhere. Each such setting is set by the service's ConfigMap."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
SETTINGS = {
    "wallet": "wallet.entrypoints.settings:WalletSettings",
    "payments": "payments.entrypoints.settings:PaymentsSettings",
    "jobs": "jobs.entrypoints.settings:JobsSettings",
    "gateway": "gateway.entrypoints.settings:GatewaySettings",
}
LOOPBACK = ("127.0.0.1", "localhost")


def settings_class(service: str) -> Any:
    module, _, name = SETTINGS[service].partition(":")
    return getattr(importlib.import_module(module), name)


def config_map(service: str) -> dict[str, str]:
    docs = [doc for doc in yaml.safe_load_all((K8S / f"{service}.yaml").read_text()) if doc]
    (found,) = [doc for doc in docs if doc["kind"] == "ConfigMap"]
    return found["data"]


def loopback_defaults(cls: Any) -> list[str]:
    prefix = cls.model_config.get("env_prefix", "")
    return [
        f"{prefix}{name}".upper()
        for name, field in cls.model_fields.items()
        if isinstance(field.default, str) and any(host in field.default for host in LOOPBACK)
    ]


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_every_loopback_default_is_overridden(service: str) -> None:
    cls = settings_class(service)
    config = config_map(service)
    assert loopback_defaults(cls), "the check finds nothing to check"
    left = [name for name in loopback_defaults(cls) if name not in config]
    assert left == [], f"{service}: left at a loopback default in the manifests: {left}"
    pointing = [name for name in config if any(host in config[name] for host in LOOPBACK)]
    assert pointing == [], f"{service}: the ConfigMap points at loopback: {pointing}"
