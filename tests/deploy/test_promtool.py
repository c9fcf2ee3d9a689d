"""The Prometheus files pass Prometheus' own checker: `promtool check rules/config` and the alert
rules' unit tests (`promtool test rules`). `make test` installs promtool; without it these fail."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS = REPO / "deploy" / "prometheus"


def promtool() -> str:
    """promtool on PATH or where `make system-deps` puts it; a missing tool is a failure, not a skip."""
    found = shutil.which("promtool") or shutil.which("promtool", path=str(REPO / ".tools" / "bin"))
    assert found, "promtool not found: run `make system-deps` (tools/system_deps.sh)"
    return found


def run_promtool(*args: str) -> str:
    done = subprocess.run(
        [promtool(), *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"promtool {' '.join(args)} failed:\n{output}"
    return output


def test_alert_rules_pass_promtool_check() -> None:
    output = run_promtool("check", "rules", "alerts.yml")
    assert "SUCCESS" in output


def test_alert_rule_unit_tests_pass() -> None:
    output = run_promtool("test", "rules", "alerts.test.yml")
    assert "SUCCESS" in output


# `promtool check config` is left out: Debian's promtool is built without Kubernetes service
# discovery and refuses prometheus.yml's `kubernetes_sd_configs`.


def test_promtool_catches_a_broken_rule(tmp_path: Path) -> None:
    """The check is real: a rule with a bad expression is refused."""
    broken = tmp_path / "broken.yml"
    broken.write_text(
        "groups:\n  - name: x\n    rules:\n      - alert: Broken\n        expr: sum(rate(x[5m]\n"
    )
    done = subprocess.run(
        [promtool(), "check", "rules", str(broken)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
