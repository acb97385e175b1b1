#!/usr/bin/env bash
# Validates every manifest under examples/, offline:
#   - plain manifests (examples/kubectl, argocd, flux): built-in kinds with kubernetes-validate
#     --strict against Kubernetes 1.35; LumenoreConnector against the CRD's openAPIV3Schema
#     (check-jsonschema); Argo CD / Flux kinds against the subset schemas in .ci/schemas/
#   - every kustomization under examples/kustomize builds offline (kubectl kustomize) and its
#     output is validated the same way
#   - the Argo CD health check: the copy in argocd-cm-health.yaml equals health.lua, and
#     health_test.lua passes (lua5.4; skipped with a message when lua5.4 is not installed)
# Usage: bash .ci/check-examples.sh     (after bash .ci/install-tools.sh)
# Env:   LC_SCHEMA=file   reuse a LumenoreConnector JSON Schema made by check-charts.sh
#        REQUIRE_LUA=1    fail instead of skipping when lua5.4 is missing
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=env.sh
source .ci/env.sh
K8S_VERSION=1.35.0
CRD=crds/lumenore.io_lumenoreconnectors.yaml
PY="$TOOLS_DIR/venv/bin/python"
work="$(mktemp -d "${TMPDIR:-/tmp}/check-examples.XXXXXX")"
trap 'rm -rf "$work"' EXIT
checks=0
fails=0
pass() { checks=$((checks + 1)); printf 'ok    %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf 'FAIL  %s\n' "$*"; }
indent() { sed 's/^/      /'; }

schema="${LC_SCHEMA:-}"
if [[ -z "$schema" ]]; then
  schema="$work/lumenoreconnector.schema.json"
  "$PY" .ci/k8s_manifests.py crd-schema "$CRD" "$schema" >/dev/null
fi

validate() { # label file...
  local label=$1; shift
  local dir="$work/split-$checks"
  rm -rf "$dir"
  if ! "$PY" .ci/k8s_manifests.py split --crd="$CRD" "$dir" "$@" >"$work/split.log" 2>&1; then
    fail "$label: not parseable"; indent <"$work/split.log"; return
  fi
  if compgen -G "$dir/builtin/*.yaml" >/dev/null; then
    if kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$dir"/builtin/*.yaml >"$work/kv.log" 2>&1; then
      pass "$label: $(ls "$dir"/builtin | wc -l) built-in object(s) valid for Kubernetes $K8S_VERSION (--strict)"
    else
      fail "$label: kubernetes-validate --strict"; indent <"$work/kv.log"
    fi
  fi
  if compgen -G "$dir/cr/*.json" >/dev/null; then
    if check-jsonschema --schemafile "$schema" "$dir"/cr/*.json >"$work/cj.log" 2>&1; then
      pass "$label: $(ls "$dir"/cr | wc -l) LumenoreConnector(s) valid against the CRD schema"
    else
      fail "$label: LumenoreConnector vs CRD schema"; indent <"$work/cj.log"
    fi
  fi
  local o kind s
  for o in "$dir"/other/*.yaml; do
    [[ -e "$o" ]] || continue
    kind=$(basename "$o" | cut -d@ -f2)
    s=".ci/schemas/$kind.schema.json"
    if [[ ! -f "$s" ]]; then
      fail "$label: no schema for $kind ($s)"; continue
    fi
    if check-jsonschema --schemafile "$s" "$o" >"$work/cj.log" 2>&1; then
      pass "$label: $kind $(basename "$o" .yaml | cut -d@ -f3) valid against $s (subset schema)"
    else
      fail "$label: $kind vs $s"; indent <"$work/cj.log"
    fi
  done
}

echo "-- plain manifests"
mapfile -t plain < <(find examples -name '*.yaml' -not -path 'examples/kustomize/*' | sort)
printf '      %s\n' "${plain[@]}"
validate "examples (plain)" "${plain[@]}"

echo "-- kustomizations (kubectl kustomize, offline)"
mapfile -t kdirs < <(find examples/kustomize -name kustomization.yaml -printf '%h\n' | sort)
for d in "${kdirs[@]}"; do
  if kubectl kustomize "$d" >"$work/k.yaml" 2>"$work/k.log"; then
    pass "kubectl kustomize $d ($(grep -c '^kind:' "$work/k.yaml") objects)"
    validate "$d (built)" "$work/k.yaml"
  else
    fail "kubectl kustomize $d"; indent <"$work/k.log"
  fi
done

echo "-- Argo CD health check"
if "$PY" - <<'PYEOF' >"$work/lua.log" 2>&1; then
import yaml
cm = yaml.safe_load(open("examples/argocd/argocd-cm-health.yaml"))
script = cm["data"]["resource.customizations.health.lumenore.io_LumenoreConnector"]
assert script == open("examples/argocd/health.lua").read(), "argocd-cm-health.yaml differs from health.lua"
PYEOF
  pass "examples/argocd/argocd-cm-health.yaml embeds examples/argocd/health.lua unchanged"
else
  fail "argocd-cm-health.yaml vs health.lua"; indent <"$work/lua.log"
fi
if command -v lua5.4 >/dev/null; then
  if lua5.4 examples/argocd/health_test.lua >"$work/lua.log" 2>&1; then
    pass "lua5.4 examples/argocd/health_test.lua ($(tail -1 "$work/lua.log"))"
  else
    fail "lua5.4 examples/argocd/health_test.lua"; indent <"$work/lua.log"
  fi
elif [[ "${REQUIRE_LUA:-0}" == 1 ]]; then
  fail "lua5.4 not installed (apt-get install lua5.4)"
else
  echo "SKIP  health_test.lua: lua5.4 not installed (apt-get install lua5.4; REQUIRE_LUA=1 makes this fail)"
fi

printf '%d checks, %d failed\n' "$checks" "$fails"
[[ $fails == 0 ]]
