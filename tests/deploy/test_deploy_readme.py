"""deploy/README.md's Secrets section names every key the manifests read from each Secret, and its
`kubectl create secret` commands give every key a pod cannot start without."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
README = REPO / "deploy" / "README.md"


def secret_refs() -> dict[str, dict[str, bool]]:
    """Secret name -> {key: optional} over every container of every manifest."""
    found: dict[str, dict[str, bool]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if not doc or doc["kind"] != "Deployment":
                continue
            spec: dict[str, Any] = doc["spec"]["template"]["spec"]
            for container in spec.get("initContainers", []) + spec["containers"]:
                for entry in container.get("env", []):
                    ref = entry.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        found.setdefault(ref["name"], {})[ref["key"]] = bool(ref.get("optional"))
    return found


def test_the_secrets_table_names_every_key() -> None:
    text = README.read_text()
    refs = secret_refs()
    assert refs
    for secret, keys in refs.items():
        (row,) = [line for line in text.splitlines() if line.startswith(f"| `{secret}`")]
        missing = [key for key in keys if f"`{key}`" not in row]
        assert missing == [], f"{secret}: the table leaves out {missing}"


def test_the_create_commands_give_every_required_key() -> None:
    text = README.read_text()
    commands = re.split(r"kubectl -n hirepay create secret generic ", text)[1:]
    given = {
        command.split()[0]: set(re.findall(r"--from-literal=(\w+)=", command.split("\n\n")[0]))
        for command in commands
    }
    for secret, keys in secret_refs().items():
        required = {key for key, optional in keys.items() if not optional}
        assert secret in given, f"no command creates {secret}"
        assert required <= given[secret], f"{secret}: {sorted(required - given[secret])} missing"
