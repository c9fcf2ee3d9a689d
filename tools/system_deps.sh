#!/usr/bin/env bash
# Debian packages the test suite needs beyond the Python lockfile: promtool (checks and unit-tests
# deploy/prometheus/alerts.yml) and Chromium (the hosted checkout pages in a real browser).
# Idempotent and quick when everything is present; `make test` runs it before pytest.
set -euo pipefail
TOOLS_BIN="${1:?usage: system_deps.sh TOOLS_BIN_DIR}"
mkdir -p "$TOOLS_BIN"

as_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "system_deps: '$*' needs root; run it as root or install the package yourself" >&2
        return 1
    fi
    "$@"
}

APT_UPDATED=0
apt_update_once() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        as_root apt-get update -qq
        APT_UPDATED=1
    fi
}

# promtool: only the binary out of Debian's `prometheus` package, unpacked into .tools/bin.
# Installing the package itself would also install (and try to start) a Prometheus server.
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$TOOLS_BIN/promtool" ]; then
    work="$(mktemp -d)"
    trap 'rm -rf "$work"' EXIT
    # `apt-get download` needs current package lists; refresh them once if it cannot find it.
    if ! (cd "$work" && apt-get download -qq prometheus 2>/dev/null); then
        apt_update_once
        (cd "$work" && apt-get download -qq prometheus)
    fi
    dpkg-deb -x "$work"/prometheus_*.deb "$work/unpacked"
    install -m 0755 "$work/unpacked/usr/bin/promtool" "$TOOLS_BIN/promtool"
    echo "system_deps: promtool $("$TOOLS_BIN/promtool" --version 2>&1 | head -1 | awk '{print $3}') in $TOOLS_BIN"
fi

# Chromium: the browser Playwright drives (it cannot download its own builds here).
if [ ! -x /usr/bin/chromium ]; then
    apt_update_once
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium fonts-liberation >/dev/null
    echo "system_deps: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed"
fi
