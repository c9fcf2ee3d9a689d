"""deploy/k8s/networkpolicy.yaml lets in exactly the callers each service's access policy accepts
(its `ACCESS` in entrypoints/main.py), on the ports its container listens on.

A caller missing from a policy is a service that cannot reach another in a cluster (every call
times out, nothing in the code's tests sees it); one too many is a pod the code would refuse
anyway, let through the network."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.test_manifests import load_docs

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
GRPC_SERVICES = ("wallet", "payments", "jobs")


def policy(app: str) -> dict[str, Any]:
    (found,) = [
        doc
        for doc in load_docs(K8S / "networkpolicy.yaml")
        if doc["spec"]["podSelector"].get("matchLabels", {}).get("app") == app
    ]
    return found


def container_ports(service: str) -> dict[str, int]:
    (deployment,) = [
        doc for doc in load_docs(K8S / f"{service}.yaml") if doc["kind"] == "Deployment"
    ]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {port["name"]: port["containerPort"] for port in container["ports"]}


def ingress_by_port(app: str) -> dict[int, set[str] | None]:
    """Port -> the apps allowed in on it (None: from anywhere)."""
    found: dict[int, set[str] | None] = {}
    for rule in policy(app)["spec"]["ingress"]:
        sources: set[str] | None = None
        if "from" in rule:
            sources = set()
            for peer in rule["from"]:
                selector = peer["podSelector"]
                if "app" in selector.get("matchLabels", {}):
                    sources.add(selector["matchLabels"]["app"])
                for expression in selector.get("matchExpressions", []):
                    assert expression["key"] == "app" and expression["operator"] == "In"
                    sources |= set(expression["values"])
        for port in rule["ports"]:
            found[port["port"]] = sources
    return found


def accepted_callers(service: str) -> set[str]:
    access = importlib.import_module(f"{service}.entrypoints.main").ACCESS
    callers = set(access.default)
    for allowed in access.per_method.values():
        callers |= allowed
    return callers


@pytest.mark.parametrize("service", GRPC_SERVICES)
def test_grpc_port_admits_exactly_the_services_callers(service: str) -> None:
    ports = container_ports(service)
    ingress = ingress_by_port(service)
    assert set(ingress) == {ports["grpc"], ports["metrics"]}
    assert ingress[ports["grpc"]] == accepted_callers(service)
    assert ingress[ports["metrics"]] is None  # Prometheus, wherever it runs


def test_the_gateways_http_port_is_open() -> None:
    ports = container_ports("gateway")
    assert ingress_by_port("gateway") == {ports["http"]: None}
