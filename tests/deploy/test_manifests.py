"""The deploy/ folder: Kubernetes manifests, the image's Dockerfile and the Prometheus config hold together."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobs.domain.audit import Check

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
K8S = DEPLOY / "k8s"
PROMETHEUS = DEPLOY / "prometheus"

# name -> (env prefix, gRPC port, metrics port); the gateway serves HTTP and /metrics on 8080.
GRPC_SERVICES = {
    "wallet": ("WALLET_", 50051, 9101),
    "payments": ("PAYMENTS_", 50052, 9102),
    "jobs": ("JOBS_", 50053, 9103),
}
GATEWAY_PORT = 8080
ALL_SERVICES = [*GRPC_SERVICES, "gateway"]

# Environment variables that carry credentials: never a literal `value:`, always a secretKeyRef.
SECRET_ENV = re.compile(r"DATABASE_URL|API_KEY|SECRET|JWT_KEYS|PASSWORD|TOKEN|PRIVATE")
# Things that look like real credentials wherever they appear in a manifest.
REAL_CREDENTIAL = re.compile(
    r"(sk|rk|pk)_(live|test)_[A-Za-z0-9]{8,}"
    r"|whsec_[A-Za-z0-9]{8,}"
    r"|postgres(ql)?(\+\w+)?://[^:/@\s\"']+:(?!REPLACE|\$)[^@\s\"']+@"
    r"|-----BEGIN [A-Z ]*PRIVATE KEY-----"
)


def load_docs(path: Path) -> list[dict[str, Any]]:
    """Every non-empty document of a (multi-document) YAML file."""
    with path.open() as fh:
        return [doc for doc in yaml.safe_load_all(fh) if doc]


def kustomization() -> dict[str, Any]:
    return load_docs(K8S / "kustomization.yaml")[0]


def resource_docs() -> list[dict[str, Any]]:
    """All objects `kubectl apply -k deploy/k8s` creates."""
    return [doc for name in kustomization()["resources"] for doc in load_docs(K8S / name)]


def service_docs(service: str) -> list[dict[str, Any]]:
    return load_docs(K8S / f"{service}.yaml")


def find(docs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


def deployment(service: str) -> dict[str, Any]:
    return find(service_docs(service), "Deployment", service)


def pod_spec(service: str) -> dict[str, Any]:
    return deployment(service)["spec"]["template"]["spec"]


def main_container(service: str) -> dict[str, Any]:
    containers = pod_spec(service)["containers"]
    return next(c for c in containers if c["name"] == service)


def all_containers(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [*spec.get("initContainers", []), *spec["containers"]]


def pod_specs() -> Iterator[tuple[str, dict[str, Any]]]:
    for doc in resource_docs():
        if doc["kind"] in {"Deployment", "StatefulSet", "DaemonSet", "Job"}:
            yield doc["metadata"]["name"], doc["spec"]["template"]["spec"]


def config_map(service: str) -> dict[str, str]:
    return find(service_docs(service), "ConfigMap", f"{service}-config")["data"]


def container_env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {entry["name"]: entry for entry in container.get("env", [])}


# ---- kustomize ---------------------------------------------------------------------------------


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    listed = kustomization()["resources"]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml", "secrets.example.yaml"}
    assert set(listed) == on_disk
    assert len(listed) == len(set(listed))
    # Applying the template would overwrite real Secrets with placeholders.
    assert "secrets.example.yaml" not in listed
    assert not [d for d in resource_docs() if d["kind"] == "Secret"]


def test_namespace_is_created_and_used() -> None:
    namespace = find(load_docs(K8S / "namespace.yaml"), "Namespace", "hirepay")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert kustomization()["namespace"] == "hirepay"


def test_one_image_for_every_container() -> None:
    images = {c["image"] for _, spec in pod_specs() for c in all_containers(spec)}
    assert images == {"hirepay"}
    assert [i["name"] for i in kustomization()["images"]] == ["hirepay"]


# ---- one manifest per service ------------------------------------------------------------------


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_service_manifest_has_its_objects(service: str) -> None:
    docs = service_docs(service)
    kinds = sorted(d["kind"] for d in docs)
    for kind in ("Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget"):
        assert kind in kinds, f"{service}.yaml has no {kind}"
    dep = deployment(service)
    sa = find(docs, "ServiceAccount", service)
    svc = find(docs, "Service", service)
    pdb = find(docs, "PodDisruptionBudget", service)
    template_labels = dep["spec"]["template"]["metadata"]["labels"]
    selector = dep["spec"]["selector"]["matchLabels"]
    assert selector.items() <= template_labels.items()
    assert svc["spec"]["selector"].items() <= template_labels.items()
    assert pdb["spec"]["selector"]["matchLabels"].items() <= template_labels.items()
    assert dep["spec"]["template"]["spec"]["serviceAccountName"] == sa["metadata"]["name"]
    # No service talks to the Kubernetes API.
    assert sa["automountServiceAccountToken"] is False
    assert pod_spec(service)["automountServiceAccountToken"] is False


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_runs_the_service_module(service: str) -> None:
    assert main_container(service)["command"] == ["python", "-m", service]


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_at_least_two_replicas(service: str) -> None:
    assert deployment(service)["spec"]["replicas"] >= 2
    assert deployment(service)["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_gateway_autoscales_from_two() -> None:
    hpa = find(service_docs("gateway"), "HorizontalPodAutoscaler", "gateway")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    assert hpa["spec"]["metrics"]


# ---- probes, ports and shutdown ----------------------------------------------------------------


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grpc_services_use_native_grpc_probes(service: str) -> None:
    _, grpc_port, metrics_port = GRPC_SERVICES[service]
    container = main_container(service)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"grpc": grpc_port, "metrics": metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == grpc_port, probe
    svc = find(service_docs(service), "Service", service)
    assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == ports


def test_gateway_probes_are_http_healthz_and_readyz() -> None:
    container = main_container("gateway")
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"http": GATEWAY_PORT}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    svc = find(service_docs("gateway"), "Service", "gateway")
    assert [p["port"] for p in svc["spec"]["ports"]] == [GATEWAY_PORT]


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grace_period_covers_the_drain(service: str) -> None:
    prefix = GRPC_SERVICES[service][0]
    grace = float(config_map(service)[f"{prefix}SHUTDOWN_GRACE_SECONDS"])
    pre_stop = main_container(service)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    # preStop, then server.stop(grace), then the workers get the same grace.
    needed = float(pre_stop[1]) + 2 * grace
    assert pod_spec(service)["terminationGracePeriodSeconds"] > needed


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_prometheus_annotations_point_at_the_metrics_port(service: str) -> None:
    annotations = deployment(service)["spec"]["template"]["metadata"]["annotations"]
    expected = GRPC_SERVICES[service][2] if service in GRPC_SERVICES else GATEWAY_PORT
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(expected)
    assert annotations["prometheus.io/path"] == "/metrics"
    ports = [p["containerPort"] for p in main_container(service)["ports"]]
    assert expected in ports


# ---- resources and security --------------------------------------------------------------------


def test_every_container_has_requests_and_limits() -> None:
    for name, spec in pod_specs():
        for container in all_containers(spec):
            resources = container.get("resources", {})
            for section in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    assert resources.get(section, {}).get(resource), (
                        f"{name}/{container['name']}: no {section}.{resource}"
                    )


def test_every_pod_runs_as_non_root_on_a_read_only_root() -> None:
    for name, spec in pod_specs():
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, name
        assert pod["runAsUser"] != 0, name
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in all_containers(spec):
            sc = container["securityContext"]
            where = f"{name}/{container['name']}"
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            # The only writable place is an emptyDir on /tmp.
            assert [m["mountPath"] for m in container.get("volumeMounts", [])] == ["/tmp"], where


# ---- configuration and secrets -----------------------------------------------------------------


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_grpc_service_config(service: str) -> None:
    prefix, grpc_port, metrics_port = GRPC_SERVICES[service]
    config = config_map(service)
    # The platform's default host is 127.0.0.1: unreachable from probes and peers in a pod.
    assert config[f"{prefix}GRPC_HOST"] == "0.0.0.0"
    assert config[f"{prefix}GRPC_PORT"] == str(grpc_port)
    assert config[f"{prefix}METRICS_PORT"] == str(metrics_port)
    # The platform's default metrics host is loopback too (safe for `make run`); Prometheus
    # scrapes the pod IP.
    assert config[f"{prefix}METRICS_HOST"] == "0.0.0.0"
    assert "HIREPAY_TRACES" in config
    env_from = main_container(service)["envFrom"]
    assert {"configMapRef": {"name": f"{service}-config"}} in env_from


def test_gateway_config() -> None:
    config = config_map("gateway")
    assert config["GATEWAY_HOST"] == "0.0.0.0"
    assert config["GATEWAY_PORT"] == str(GATEWAY_PORT)
    for key in (
        "GATEWAY_PUBLIC_URL",
        "GATEWAY_JOBS_TARGET",
        "GATEWAY_PAYMENTS_TARGET",
        "GATEWAY_WALLET_TARGET",
        "GATEWAY_JWT_ISSUER",
        "GATEWAY_JWT_AUDIENCE",
        "GATEWAY_RATE_LIMIT_PER_MINUTE",
        "HIREPAY_TRACES",
    ):
        assert config[key], key
    assert config["GATEWAY_ENV"] == "production"
    assert config["GATEWAY_PUBLIC_URL"].startswith("https://")
    assert int(config["GATEWAY_RATE_LIMIT_PER_MINUTE"]) > 0
    assert "GATEWAY_JWT_KEYS" in container_env(main_container("gateway"))


def test_payments_talks_to_real_stripe() -> None:
    config = config_map("payments")
    # Empty means the SDK's default: the real Stripe API, never the local sandbox.
    assert config["PAYMENTS_STRIPE_API_BASE"] == ""
    env = container_env(main_container("payments"))
    for key in ("PAYMENTS_STRIPE_API_KEY", "PAYMENTS_STRIPE_WEBHOOK_SECRETS"):
        assert env[key]["valueFrom"]["secretKeyRef"]["key"] == key


def test_jobs_config() -> None:
    import json

    config = config_map("jobs")
    assert config["JOBS_TERMS_VERSION"]
    # {category: {currency: fee in minor units}}, with a default for unlisted categories.
    fees = json.loads(config["JOBS_POSTING_FEES"])
    assert "default" in fees
    for prices in fees.values():
        assert prices and all(
            re.fullmatch(r"[A-Z]{3}", currency) and isinstance(amount, int) and amount > 0
            for currency, amount in prices.items()
        )


def test_targets_name_real_services_and_ports() -> None:
    grpc_ports = {name: port for name, (_, port, _) in GRPC_SERVICES.items()}
    targets = {
        key: value
        for service in ALL_SERVICES
        for key, value in config_map(service).items()
        if key.endswith("_TARGET")
    }
    assert set(targets) >= {
        "JOBS_PAYMENTS_TARGET",
        "JOBS_WALLET_TARGET",
        "GATEWAY_JOBS_TARGET",
        "GATEWAY_PAYMENTS_TARGET",
        "GATEWAY_WALLET_TARGET",
    }
    for key, target in targets.items():
        host, port = target.rsplit(":", 1)
        expected = key.removesuffix("_TARGET").split("_", 1)[1].lower()
        assert host == expected, key
        assert int(port) == grpc_ports[host], key


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_credentials_come_only_from_the_services_own_secret(service: str) -> None:
    for container in all_containers(pod_spec(service)):
        for name, entry in container_env(container).items():
            if SECRET_ENV.search(name):
                assert "value" not in entry, f"{service}: literal value for {name}"
                ref = entry["valueFrom"]["secretKeyRef"]
                assert ref["name"] == f"{service}-secrets", name
                assert ref["key"] == name
    for key in config_map(service):
        assert not SECRET_ENV.search(key), f"{service}-config holds a credential: {key}"


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_database_url_is_a_secret(service: str) -> None:
    prefix = GRPC_SERVICES[service][0]
    env = container_env(main_container(service))
    assert env[f"{prefix}DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == f"{service}-secrets"


def test_no_literal_credentials_in_any_manifest() -> None:
    for path in sorted(DEPLOY.rglob("*")):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".md", ""}:
            match = REAL_CREDENTIAL.search(path.read_text())
            assert match is None, f"{path.relative_to(REPO)}: {match.group(0)[:12]}..."


def test_secret_template_covers_every_reference_with_placeholders() -> None:
    secrets = {doc["metadata"]["name"]: doc for doc in load_docs(K8S / "secrets.example.yaml")}
    assert all(doc["kind"] == "Secret" for doc in secrets.values())
    referenced = {
        (ref["name"], ref["key"])
        for _, spec in pod_specs()
        for container in all_containers(spec)
        for entry in container.get("env", [])
        if (ref := entry.get("valueFrom", {}).get("secretKeyRef"))
    }
    provided = {(name, key) for name, doc in secrets.items() for key in doc.get("stringData", {})}
    assert referenced == provided
    for doc in secrets.values():
        assert "data" not in doc  # base64 hides what is in it
        for key, value in doc["stringData"].items():
            assert "REPLACE" in value, f"{key} is not a placeholder"


# ---- migrations --------------------------------------------------------------------------------


@pytest.mark.parametrize("service", list(GRPC_SERVICES))
def test_migrations_run_before_the_service(service: str) -> None:
    prefix = GRPC_SERVICES[service][0]
    (init,) = pod_spec(service)["initContainers"]
    script = " ".join(init["command"])
    assert init["command"][:2] == ["python", "-c"]
    assert "from hirepay_platform.migrations import upgrade" in script
    assert f"services/{service}/migrations" in script
    assert f'os.environ["{prefix}DATABASE_URL"]' in script
    assert init["workingDir"] == "/app"
    # Replicas starting together serialise on an advisory lock.
    assert "pg_advisory_lock" in script
    compile(init["command"][2], f"{service}-migrate", "exec")


# ---- the image ---------------------------------------------------------------------------------


def makefile_protoc_flags() -> list[str]:
    text = (REPO / "Makefile").read_text()
    line = next(line for line in text.splitlines() if "grpc_tools.protoc" in line)
    nxt = text.splitlines()[text.splitlines().index(line) + 1]
    flags = re.findall(r"--\w+_out=\$\(PROTO_OUT\)", line + nxt)
    return sorted(f.replace("$(PROTO_OUT)", "gen") for f in flags)


def test_dockerfile_builds_like_the_makefile() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", dockerfile, re.M)
    uv_version = re.search(r"^UV_VERSION := (\S+)$", makefile, re.M).group(1)
    assert f"ARG UV_VERSION={uv_version}" in dockerfile
    assert "uv sync --frozen --no-dev" in dockerfile
    assert "python -m grpc_tools.protoc -I protos" in dockerfile
    assert '"_proto"' in dockerfile
    flags = makefile_protoc_flags()
    assert flags == ["--grpc_python_out=gen", "--pyi_out=gen", "--python_out=gen"]
    for flag in flags:
        assert flag in dockerfile
    assert "python tools/hirepay_dev/pkginit.py gen/hirepay" in dockerfile
    assert "$(find protos -name '*.proto' | sort)" in dockerfile
    users = re.findall(r"^USER (\d+)(?::(\d+))?$", dockerfile, re.M)
    assert users and users[-1][0] != "0"


def test_build_context_leaves_local_state_out() -> None:
    ignored = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    for entry in ("**/.venv", "**/.data", "**/gen", "**/.git"):
        assert entry in ignored


# ---- Prometheus --------------------------------------------------------------------------------


def prometheus_config() -> dict[str, Any]:
    return load_docs(PROMETHEUS / "prometheus.yml")[0]


def alert_rules() -> list[dict[str, Any]]:
    groups = load_docs(PROMETHEUS / "alerts.yml")[0]["groups"]
    return [rule for group in groups for rule in group["rules"]]


def test_prometheus_loads_the_alert_rules() -> None:
    config = prometheus_config()
    assert config["rule_files"] == ["alerts.yml"]
    assert (PROMETHEUS / "alerts.yml").is_file()


def test_prometheus_discovers_annotated_pods() -> None:
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    pods = jobs["hirepay-pods"]
    assert pods["kubernetes_sd_configs"][0]["role"] == "pod"
    assert pods["kubernetes_sd_configs"][0]["namespaces"]["names"] == ["hirepay"]
    relabels = pods["relabel_configs"]
    keep = [
        r
        for r in relabels
        if r.get("action") == "keep"
        and r["source_labels"] == ["__meta_kubernetes_pod_annotation_prometheus_io_scrape"]
    ]
    assert keep and keep[0]["regex"] == "true"
    address = next(r for r in relabels if r.get("target_label") == "__address__")
    assert "__meta_kubernetes_pod_annotation_prometheus_io_port" in address["source_labels"]
    joined = "10.1.2.3:50051;9101"
    assert re.fullmatch(address["regex"], joined)
    assert re.sub(address["regex"], address["replacement"].replace("$", "\\"), joined) == (
        "10.1.2.3:9101"
    )
    assert any(r.get("target_label") == "__metrics_path__" for r in relabels)
    # The RPC metrics carry their own `service` label; a target label must not clobber it.
    assert not any(r.get("target_label") == "service" for r in relabels)


def test_prometheus_scrapes_every_local_metrics_port() -> None:
    jobs = {job["job_name"]: job for job in prometheus_config()["scrape_configs"]}
    targets = {
        target: group.get("labels", {}).get("app")
        for group in jobs["hirepay-local"]["static_configs"]
        for target in group["targets"]
    }
    expected = {f"127.0.0.1:{port}": name for name, (_, _, port) in GRPC_SERVICES.items()}
    expected[f"127.0.0.1:{GATEWAY_PORT}"] = "gateway"
    assert targets == expected


def test_every_alert_rule_is_complete() -> None:
    rules = alert_rules()
    assert rules
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        name = rule["alert"]
        assert rule["expr"].strip(), name
        assert re.fullmatch(r"\d+[smh]", rule["for"]), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert rule["annotations"]["summary"].strip(), name
        assert rule["annotations"]["description"].strip(), name


def test_alert_unit_tests_name_real_alerts() -> None:
    """deploy/prometheus/alerts.test.yml (run with `promtool test rules`) tests existing rules."""
    tests = load_docs(PROMETHEUS / "alerts.test.yml")[0]
    assert tests["rule_files"] == ["alerts.yml"]
    names = {rule["alert"] for rule in alert_rules()}
    tested = {case["alertname"] for test in tests["tests"] for case in test["alert_rule_test"]}
    assert tested and tested <= names


# ---- alert metric names against the code -------------------------------------------------------


def declared_metrics() -> dict[str, tuple[str, str]]:
    """The `# metric: NAME TYPE OWNER` header of alerts.yml: name -> (type, owner)."""
    header = (PROMETHEUS / "alerts.yml").read_text()
    found = re.findall(r"^# metric: (\w+)\s+(\w+)\s+(\w+)", header, re.M)
    return {name: (kind, owner) for name, kind, owner in found}


def metrics_in_rules() -> set[str]:
    """Metric names in the rule expressions, a histogram's series folded into its name."""
    histograms = {name for name, (kind, _) in declared_metrics().items() if kind == "histogram"}
    names: set[str] = set()
    for rule in alert_rules():
        for name in re.findall(r"\b(hirepay_\w+|up)\b(?!\s*\()", rule["expr"]):
            base = re.sub(r"_(bucket|count|sum)$", "", name)
            names.add(base if base in histograms else name)
    return names


def test_alerts_use_only_declared_metrics() -> None:
    declared = declared_metrics()
    assert metrics_in_rules() <= set(declared)
    assert set(declared) <= metrics_in_rules()


def test_alerts_cover_ops4() -> None:
    used = metrics_in_rules()
    for name in (
        "hirepay_rpc_requests_total",  # error rate
        "hirepay_rpc_duration_seconds",  # latency
        "hirepay_provider_call_duration_seconds",  # provider down / slow
        "hirepay_payment_attempts_total",
        "hirepay_payments_outbox_backlog",  # webhook / settlement backlog
        "hirepay_webhook_lag_seconds",
        "hirepay_webhook_events_total",
        "hirepay_jobs_stuck_sagas",  # stuck sagas
        "hirepay_consistency_violations",  # OPS-3
        "up",  # service down
    ):
        assert name in used, name


OWNER_SOURCES = {
    "platform": [REPO / "libs" / "hirepay_platform"],
    "payments": [REPO / "services" / "payments"],
    "jobs": [REPO / "services" / "jobs"],
    "auditor": [REPO / "services" / "jobs"],
}
REGISTRATION = re.compile(r"\b(Counter|Gauge|Histogram|Summary)\(\s*[\"'](hirepay_\w+)[\"']")


def registered_metrics(roots: list[Path]) -> dict[str, str] | None:
    """Metric name -> type registered by the code under `roots`; None if it registers none yet."""
    found: dict[str, str] = {}
    uses_prometheus = False
    for root in roots:
        for path in root.rglob("*.py"):
            text = path.read_text()
            if "prometheus_client" not in text:
                continue
            uses_prometheus = True
            for kind, name in REGISTRATION.findall(text):
                found[name] = kind.lower()
                if kind == "Counter" and not name.endswith("_total"):
                    found[f"{name}_total"] = "counter"
    return found if uses_prometheus else None


@pytest.mark.parametrize("owner", sorted(OWNER_SOURCES))
def test_declared_metrics_match_the_code(owner: str) -> None:
    """Each name alerts.yml relies on is registered, with that type, by the code that owns it
    (the consistency auditor's by the jobs service, where it runs)."""
    expected = {name: kind for name, (kind, who) in declared_metrics().items() if who == owner}
    assert expected
    registered = registered_metrics(OWNER_SOURCES[owner])
    assert registered is not None, f"{owner} registers no Prometheus metrics"
    for name, kind in expected.items():
        assert name in registered, f"{name} is not registered under {owner}"
        assert registered[name] == kind, f"{name} is a {registered[name]}, alerts.yml says {kind}"


def test_the_auditor_checks_are_the_declared_labels() -> None:
    """Each `check` label the auditor exports is declared for the alert, and its test uses one."""
    declaration = next(
        line
        for line in (PROMETHEUS / "alerts.yml").read_text().splitlines()
        if "metric: hirepay_consistency_violations" in line
    )
    labels = re.search(r"\{check=([^}]*)\}", declaration)
    assert labels is not None
    declared = set(labels.group(1).split("|"))
    assert declared == {c.value for c in Check}
    tested = re.findall(r'check="(\w+)"', (PROMETHEUS / "alerts.test.yml").read_text())
    assert tested and set(tested) <= declared


# ---- every variable a manifest sets is one the service reads -----------------------------------

SETTINGS_CLASSES = {
    "wallet": "wallet.entrypoints.settings:WalletSettings",
    "payments": "payments.entrypoints.settings:PaymentsSettings",
    "jobs": "jobs.entrypoints.settings:JobsSettings",
    "gateway": "gateway.entrypoints.settings:GatewaySettings",
}


def settings_class(service: str) -> Any:
    import importlib

    module, _, name = SETTINGS_CLASSES[service].partition(":")
    return getattr(importlib.import_module(module), name)


def variables_read(cls: Any) -> set[str]:
    """The environment variables a settings class reads: prefix + field name, or its aliases."""
    prefix = cls.model_config.get("env_prefix", "")
    names: set[str] = set()
    for field_name, field in cls.model_fields.items():
        alias = field.validation_alias
        if alias is None:
            names.add(f"{prefix}{field_name}".upper())
        elif isinstance(alias, str):
            names.add(alias)
        else:
            names.update(str(choice) for choice in alias.choices)
    return names


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_every_configured_variable_is_a_setting(service: str) -> None:
    # Settings ignore unknown variables (extra="ignore"), so a misspelt key in a manifest would
    # silently leave the default in force: each key must name a setting of its service.
    read = variables_read(settings_class(service))
    configured = set(config_map(service)) | set(container_env(main_container(service)))
    assert configured - read == set()


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_configured_values_are_valid_settings(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The ConfigMap's values parse and pass the service's own checks (secrets stand in here).
    cls = settings_class(service)
    for name in variables_read(cls):
        monkeypatch.delenv(name, raising=False)
    for name, value in config_map(service).items():
        monkeypatch.setenv(name, value)
    for name in container_env(main_container(service)):
        if name not in config_map(service):
            # A JSON key set {kid: key} where the setting is one, else an opaque secret.
            sample = '{"k1": "%s"}' % ("k" * 48) if name.endswith("JWT_KEYS") else "x" * 48
            monkeypatch.setenv(name, sample)
    prefix = cls.model_config.get("env_prefix", "")
    monkeypatch.setenv(f"{prefix}DATABASE_URL", "postgresql://u:p@db:5432/hirepay")
    monkeypatch.setenv("HIREPAY_SERVICE_TOKEN_SECRET", "s" * 48)
    cls()
