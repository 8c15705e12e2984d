#!/usr/bin/env bash
# Checks every Kubernetes manifest in deploy/: the official schemas (kubernetes-validate, strict:
# unknown fields fail) and security misconfigurations (checkov; a check the DaemonSet skips is named
# with its reason in its annotations). Both come from PyPI into a private virtualenv.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${TIDAL_TOOLS_VENV:-$HOME/.cache/tidal/manifest-tools}"
if [ ! -x "$venv/bin/checkov" ] || [ ! -x "$venv/bin/kubernetes-validate" ]; then
    echo "manifests: installing kubernetes-validate and checkov into $venv"
    if ! python3 -m venv "$venv" 2>/dev/null; then
        apt-get install -y -q python3-venv >/dev/null
        python3 -m venv "$venv"
    fi
    "$venv/bin/pip" install -q --upgrade pip
    "$venv/bin/pip" install -q "kubernetes-validate==1.37.0" "checkov==3.3.30"
fi
echo "manifests: kubernetes-validate"
"$venv/bin/kubernetes-validate" --strict deploy/*.yaml
echo "manifests: checkov"
"$venv/bin/checkov" -d deploy --framework kubernetes --compact --quiet --skip-download
"$venv/bin/checkov" -f deploy/Dockerfile --framework dockerfile --compact --quiet --skip-download
echo "manifests: all pass"
