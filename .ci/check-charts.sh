#!/usr/bin/env bash
# Checks of the Helm chart (charts/lumenore-operator), all offline:
#   1. the chart's CRD copy equals crds/ (byte for byte, and the rendered CRD semantically)
#   2. helm lint --strict with every values file of charts/lumenore-operator/ci/
#   3. helm template with each of them; the output validated against Kubernetes 1.35 schemas with
#      unknown fields rejected (kubernetes-validate --strict); LumenoreConnector objects validated
#      with check-jsonschema against the CRD's own openAPIV3Schema; properties of the output asserted
#      (security context, RBAC scope, images, CRD keep policy, no CRD when crds.install=false)
#   4. negative tests: bad values files must be rejected by values.schema.json (failure and message
#      asserted); bad manifests must be rejected by the validators themselves
#   5. then .ci/check-examples.sh (examples/) and .ci/gen-values-doc.sh --check (docs/install.md)
# Usage: bash .ci/check-charts.sh          (after bash .ci/install-tools.sh)
# Env:   SKIP_EXAMPLES=1 / SKIP_DOCS=1    skip step 5's parts
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=env.sh
source .ci/env.sh

K8S_VERSION=1.35.0
CHART=charts/lumenore-operator
CRD=crds/lumenore.io_lumenoreconnectors.yaml
CHART_CRD=$CHART/files/crds/lumenore.io_lumenoreconnectors.yaml
PY="$TOOLS_DIR/venv/bin/python"
RELEASE=lumenore
NS=lumenore-system
# What the cluster's discovery lists once the LumenoreConnector CRD is installed.
LC_API=lumenore.io/v1alpha1/LumenoreConnector

for t in helm kubectl kubernetes-validate check-jsonschema; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (run: bash .ci/install-tools.sh)" >&2; exit 2; }
done
[[ -x "$PY" ]] || { echo "missing $PY (run: bash .ci/install-tools.sh)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/check-charts.XXXXXX")"
trap 'rm -rf "$work"' EXIT
start=$(date +%s)
checks=0
fails=0
pass() { checks=$((checks + 1)); printf '  ok    %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf '  FAIL  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/        /'; }
expect_line() { sed -n '1s/^# expect: //p' "$1"; }

# ---- 1. CRD copy -----------------------------------------------------------------------------
section "CRD: chart copy vs $CRD"
if cmp -s "$CRD" "$CHART_CRD"; then
  pass "$CHART_CRD is byte-identical to $CRD"
else
  fail "$CHART_CRD differs from $CRD: run .ci/sync-chart-crd.sh"
  diff -u "$CHART_CRD" "$CRD" | head -40 | indent || true
fi
helm template "$RELEASE" "$CHART" -n "$NS" --show-only templates/crds.yaml >"$work/crd-rendered.yaml"
if "$PY" .ci/k8s_manifests.py crd-equal "$CRD" "$work/crd-rendered.yaml" >"$work/crd-eq.log" 2>&1; then
  pass "rendered CRD equals $CRD (ignoring metadata.annotations/labels)"
else
  fail "rendered CRD differs from $CRD"; indent <"$work/crd-eq.log"
fi
# The LumenoreFleetRollout CRD: the same copy rule.
ROLLOUT_CRD=crds/lumenore.io_lumenorefleetrollouts.yaml
CHART_ROLLOUT_CRD=$CHART/files/crds/lumenore.io_lumenorefleetrollouts.yaml
if cmp -s "$ROLLOUT_CRD" "$CHART_ROLLOUT_CRD"; then
  pass "$CHART_ROLLOUT_CRD is byte-identical to $ROLLOUT_CRD"
else
  fail "$CHART_ROLLOUT_CRD differs from $ROLLOUT_CRD: run .ci/sync-chart-crd.sh"
fi
helm template "$RELEASE" "$CHART" -n "$NS" --show-only templates/crd-fleetrollouts.yaml >"$work/rollout-crd-rendered.yaml"
if "$PY" .ci/k8s_manifests.py crd-equal "$ROLLOUT_CRD" "$work/rollout-crd-rendered.yaml" >"$work/crd-eq.log" 2>&1 \
   && grep -q 'helm.sh/resource-policy: keep' "$work/rollout-crd-rendered.yaml"; then
  pass "rendered LumenoreFleetRollout CRD equals $ROLLOUT_CRD and carries the keep annotation"
else
  fail "rendered LumenoreFleetRollout CRD differs from $ROLLOUT_CRD (or lacks the keep annotation)"; indent <"$work/crd-eq.log"
fi
if grep -q 'helm.sh/resource-policy: keep' "$work/crd-rendered.yaml"; then
  pass "rendered CRD carries helm.sh/resource-policy: keep"
else
  fail "rendered CRD lacks helm.sh/resource-policy: keep"
fi
n=$(helm template "$RELEASE" "$CHART" -n "$NS" --set crds.install=false | "$PY" .ci/k8s_manifests.py count-kind CustomResourceDefinition /dev/stdin)
if [[ "$n" == 0 ]]; then pass "crds.install=false renders no CustomResourceDefinition"; else fail "crds.install=false still renders $n CRD(s)"; fi
n=$(helm template "$RELEASE" "$CHART" -n "$NS" --set crds.keep=false --show-only templates/crds.yaml | grep -c 'resource-policy' || true)
if [[ "$n" == 0 ]]; then pass "crds.keep=false drops the keep annotation"; else fail "crds.keep=false still renders the keep annotation"; fi

# JSON Schema of LumenoreConnector from the CRD (used for every CR below and in check-examples.sh).
section "JSON Schema of LumenoreConnector from $CRD"
"$PY" .ci/k8s_manifests.py crd-schema "$CRD" "$work/lumenoreconnector.schema.json"

# ---- 2. lint -----------------------------------------------------------------------------------
section "helm lint --strict"
values_files=("$CHART"/ci/*-values.yaml)
for f in "${values_files[@]}"; do
  # helm lint has no --api-versions: the tenants' CRD check (section "tenants and the CRD") is off here.
  if helm lint --strict "$CHART" -n "$NS" -f "$f" --set crds.checkForTenants=false >"$work/lint.log" 2>&1; then
    pass "helm lint --strict -f $f"
  else
    fail "helm lint --strict -f $f"; indent <"$work/lint.log"
  fi
done

section "helm package (what users install from a .tgz, e.g. air-gapped)"
if helm package "$CHART" -d "$work/pkg" >"$work/pkg.log" 2>&1; then
  tgz=$(ls "$work"/pkg/*.tgz)
  listing=$(tar -tzf "$tgz")
  missing=""
  for want in files/crds/lumenore.io_lumenoreconnectors.yaml files/crds/lumenore.io_lumenorefleetrollouts.yaml values.schema.json templates/crds.yaml templates/crd-fleetrollouts.yaml templates/NOTES.txt; do
    grep -qx "lumenore-operator/$want" <<<"$listing" || missing="$missing $want"
  done
  extra=$(grep -E '^lumenore-operator/(ci|tests)/' <<<"$listing" || true)
  if [[ -z "$missing" && -z "$extra" ]]; then
    pass "$(basename "$tgz"): $(wc -l <<<"$listing") files, CRD copy and schema included, ci/ and tests/ left out"
  else
    fail "$(basename "$tgz"): missing:${missing:- none}; unexpected: ${extra:-none}"
  fi
  if diff <(helm template "$RELEASE" "$tgz" -n "$NS" -f "$CHART/ci/tenants-values.yaml" --api-versions "$LC_API") \
          <(helm template "$RELEASE" "$CHART" -n "$NS" -f "$CHART/ci/tenants-values.yaml" --api-versions "$LC_API") >"$work/pkgdiff.log"; then
    pass "the packaged chart renders exactly as the chart directory"
  else
    fail "the packaged chart renders differently"; head -20 "$work/pkgdiff.log" | indent
  fi
else
  fail "helm package"; indent <"$work/pkg.log"
fi

# ---- 3. render + validate ----------------------------------------------------------------------
validate_dir() { # label dir-with-builtin/cr/other
  local label=$1 dir=$2
  if compgen -G "$dir/builtin/*.yaml" >/dev/null; then
    if kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$dir"/builtin/*.yaml >"$work/kv.log" 2>&1; then
      pass "$label: $(ls "$dir"/builtin | wc -l) built-in objects valid for Kubernetes $K8S_VERSION (--strict)"
    else
      fail "$label: kubernetes-validate --strict"; indent <"$work/kv.log"
    fi
  fi
  if compgen -G "$dir/cr/*.json" >/dev/null; then
    if check-jsonschema --schemafile "$work/lumenoreconnector.schema.json" "$dir"/cr/*.json >"$work/cj.log" 2>&1; then
      pass "$label: $(ls "$dir"/cr | wc -l) LumenoreConnector objects valid against the CRD schema"
    else
      fail "$label: LumenoreConnector objects vs CRD schema"; indent <"$work/cj.log"
    fi
  fi
  local o
  for o in "$dir"/other/*.yaml; do
    [[ -e "$o" ]] || continue
    # No offline schema for third-party kinds (ServiceMonitor): check the fields the chart sets.
    if "$PY" - "$o" <<'EOF' >"$work/other.log" 2>&1; then
import sys, yaml
d = yaml.safe_load(open(sys.argv[1]))
assert d["apiVersion"] == "monitoring.coreos.com/v1" and d["kind"] == "ServiceMonitor", "unexpected kind"
assert d["spec"]["selector"]["matchLabels"], "no selector"
assert all(e.get("port") for e in d["spec"]["endpoints"]), "endpoint without port"
EOF
      pass "$label: ServiceMonitor $(basename "$o" .yaml | cut -d@ -f3) (selector and endpoints set; no offline schema)"
    else
      fail "$label: $(basename "$o")"; indent <"$work/other.log"
    fi
  done
}

assert_render() { # label rendered-file python-assertions
  local label=$1 file=$2 code=$3
  if "$PY" - "$file" >"$work/assert.log" 2>&1 <<EOF; then
import sys, yaml
objs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
def kinds(k): return [o for o in objs if o["kind"] == k]
$code
EOF
    pass "$label"
  else
    fail "$label"; indent <"$work/assert.log"
  fi
}

section "helm template + offline validation (Kubernetes $K8S_VERSION)"
for f in "${values_files[@]}"; do
  name=$(basename "$f" -values.yaml)
  out="$work/render-$name.yaml"
  # As on a cluster where the CRD is installed (the tenants' CRD check is tested below).
  if ! helm template "$RELEASE" "$CHART" -n "$NS" --kube-version "$K8S_VERSION" --api-versions "$LC_API" -f "$f" >"$out" 2>"$work/tpl.log"; then
    fail "helm template -f $f"; indent <"$work/tpl.log"; continue
  fi
  pass "helm template -f $f ($(grep -c '^kind:' "$out") objects)"
  "$PY" .ci/k8s_manifests.py split --crd="$CRD" "$work/split-$name" "$out" | indent
  validate_dir "$name" "$work/split-$name"
done

section "toggles render valid objects"
toggles=("rbac.create=false" "serviceAccount.create=false,serviceAccount.name=custom" "metrics.service.enabled=false"
  "networkPolicy.enabled=false" "leaderElection.enabled=true" "fullnameOverride=lmo,nameOverride=x"
  "operator.enabled=false" "crds.install=false,crds.keep=false")
rm -rf "$work/toggles"
for i in "${!toggles[@]}"; do
  if helm template "$RELEASE" "$CHART" -n "$NS" --kube-version "$K8S_VERSION" --set "${toggles[$i]}" >"$work/toggle-$i.yaml" 2>"$work/tpl.log"; then
    "$PY" .ci/k8s_manifests.py split "$work/toggles/$i" "$work/toggle-$i.yaml" >/dev/null
  else
    fail "helm template --set ${toggles[$i]}"; indent <"$work/tpl.log"
  fi
done
if kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$work"/toggles/*/builtin/*.yaml >"$work/kv.log" 2>&1; then
  pass "${#toggles[@]} toggle sets render and validate (--strict): ${toggles[*]}"
else
  fail "toggle renders: kubernetes-validate --strict"; indent <"$work/kv.log"
fi

assert_render "default: hardened operator pod (non-root, read-only root fs, no escalation, drop ALL, seccomp, probes, resources)" \
  "$work/render-default.yaml" '
d = kinds("Deployment")[0]["spec"]["template"]["spec"]
c = d["containers"][0]
sc, psc = c["securityContext"], d["securityContext"]
assert psc["runAsNonRoot"] and psc["runAsUser"] == 65532 and psc["seccompProfile"]["type"] == "RuntimeDefault", psc
assert sc["readOnlyRootFilesystem"] and sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], sc
assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
assert "--leader-elect=false" in c["args"] and kinds("Deployment")[0]["spec"]["strategy"]["type"] == "Recreate"
assert [o["kind"] for o in objs if o["kind"] in ("ClusterRole", "ClusterRoleBinding")] == ["ClusterRole", "ClusterRoleBinding"]
assert not kinds("Lease") and not [r for r in kinds("Role") if not r["metadata"]["name"].endswith("-fleet-rollouts")], "no leader-election Role with one replica"
assert kinds("ServiceAccount")[0]["automountServiceAccountToken"] is False
'
assert_render "default: RBAC is least privilege (no wildcards, no secrets writes, delete only on networkpolicies/pdbs/configmaps)" \
  "$work/render-default.yaml" '
rules = kinds("ClusterRole")[0]["rules"]
for r in rules:
    assert "*" not in r["verbs"] and "*" not in r["resources"] and "*" not in r["apiGroups"], r
    if "secrets" in r["resources"]: assert sorted(r["verbs"]) == ["get", "list", "watch"], r
    if "delete" in r["verbs"]: assert set(r["resources"]) <= {"networkpolicies", "poddisruptionbudgets", "configmaps"}, r
    assert not {"escalate", "bind", "impersonate"} & set(r["verbs"]), r
'
assert_render "default: fleet rollouts: a Role in the release namespace to read LumenoreFleetRollouts, patch their status and create Events (never write their spec)" \
  "$work/render-default.yaml" '
role = [r for r in kinds("Role") if r["metadata"]["name"].endswith("-fleet-rollouts")][0]
assert role["metadata"]["namespace"] == "lumenore-system", role["metadata"]
rules = {(g, res): sorted(r["verbs"]) for r in role["rules"] for g in r["apiGroups"] for res in r["resources"]}
assert rules == {("lumenore.io", "lumenorefleetrollouts"): ["get", "list", "watch"], ("lumenore.io", "lumenorefleetrollouts/status"): ["patch"], ("events.k8s.io", "events"): ["create"]}, rules
b = [r for r in kinds("RoleBinding") if r["metadata"]["name"].endswith("-fleet-rollouts")][0]
assert b["roleRef"]["name"] == role["metadata"]["name"] and b["subjects"][0]["namespace"] == "lumenore-system"
assert len([c for c in kinds("CustomResourceDefinition")]) == 2
'
assert_render "namespace-scoped: only Roles/RoleBindings (in tenants-eu, tenants-us; Lease Role in $NS), leader election on" \
  "$work/render-namespace-scoped.yaml" '
assert not kinds("ClusterRole") and not kinds("ClusterRoleBinding"), "cluster-wide RBAC rendered"
roles = sorted((r["metadata"]["namespace"], r["metadata"]["name"]) for r in kinds("Role"))
assert roles == [("lumenore-system", "lumenore-lumenore-operator-fleet-rollouts"), ("lumenore-system", "lumenore-lumenore-operator-leader-election"), ("tenants-eu", "lumenore-lumenore-operator"), ("tenants-us", "lumenore-lumenore-operator")], roles
assert len(kinds("RoleBinding")) == 4
c = kinds("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
assert "--leader-elect=true" in c["args"] and "--watch-namespaces=tenants-eu,tenants-us" in c["args"], c["args"]
assert "--cluster-cloud=aws" in c["args"] and "--cluster-region=eu-west-1" in c["args"], c["args"]
lease = [r for r in kinds("Role") if r["metadata"]["name"].endswith("leader-election")][0]
assert {"coordination.k8s.io"} == {g for r in lease["rules"] for g in r["apiGroups"]}
np = kinds("NetworkPolicy")[0]["spec"]
assert np["ingress"][0]["ports"][0]["port"] == 8080 and np["egress"][1]["to"][0]["ipBlock"]["cidr"] == "10.0.0.1/32"
'
assert_render "air-gapped: images from the mirror by digest, pull secrets, no CRD" \
  "$work/render-airgapped.yaml" '
d = kinds("Deployment")[0]["spec"]["template"]["spec"]
c = d["containers"][0]
assert c["image"] == "registry.corp.internal:5000/mirror/lumenore/lumenore-operator@sha256:" + "0" * 63 + "1", c["image"]
assert "--connector-image=registry.corp.internal:5000/mirror/lumenore/lumenore-connector@sha256:" + "0" * 63 + "2" in c["args"], c["args"]
assert d["imagePullSecrets"] == [{"name": "corp-mirror-pull"}, {"name": "extra-pull"}], d["imagePullSecrets"]
assert not kinds("CustomResourceDefinition")
'
assert_render "tenants: 4 LumenoreConnectors, 2 Secrets created from values, regions from cluster.*" \
  "$work/render-tenants.yaml" '
lcs = {o["metadata"]["name"]: o["spec"] for o in kinds("LumenoreConnector")}
assert sorted(lcs) == ["acme", "demo", "globex-connector", "initech"], sorted(lcs)
assert lcs["acme"]["credentials"] == {"secretName": "acme-lumenore", "clientIdKey": "clientId", "clientSecretKey": "clientSecret"}
assert lcs["globex-connector"]["credentials"] == {"secretName": "globex-connector-credentials", "apiTokenKey": "apiToken"}
assert all(s["region"] == {"cloud": "azure", "name": "westeurope"} for s in lcs.values())
assert "credentials" not in lcs["demo"] and lcs["demo"]["backend"] == "embedded"
assert sorted(s["metadata"]["name"] for s in kinds("Secret")) == ["globex-connector-credentials", "initech-credentials"]
'

# The operator flags the chart renders must parse: `lumenore-operator ARGS --help` fails on an unknown
# flag or a bad value before printing help. Needs a built binary (OPERATOR_BIN, or a cargo target
# dir); .ci/build-images.sh runs the same check inside the operator image.
op_bin="${OPERATOR_BIN:-}"
if [[ -z "$op_bin" ]]; then
  for d in "${CARGO_TARGET_DIR:-$repo/target}" "$repo/target"; do
    for sub in x86_64-unknown-linux-gnu/release release debug; do
      [[ -z "$op_bin" && -x "$d/$sub/lumenore-operator" ]] && op_bin="$d/$sub/lumenore-operator"
    done
  done
fi
section "operator flags rendered by the chart parse (lumenore-operator ARGS --help)"
if [[ -n "$op_bin" ]]; then
  for f in "${values_files[@]}"; do
    name=$(basename "$f" -values.yaml)
    mapfile -t args < <("$PY" .ci/k8s_manifests.py operator-args "$work/render-$name.yaml")
    ((${#args[@]})) || continue
    if "$op_bin" "${args[@]}" --help >/dev/null 2>"$work/args.log"; then
      pass "$name: ${#args[@]} flags accepted by $op_bin"
    else
      fail "$name: $op_bin rejects the rendered flags: ${args[*]}"; indent <"$work/args.log"
    fi
  done
else
  echo "  SKIP  no lumenore-operator binary (set OPERATOR_BIN or build it); .ci/build-images.sh checks this in the image"
fi

assert_render "tenants-only: operator.enabled=false renders only the LumenoreConnector (no operator, RBAC, CRD)" \
  "$work/render-tenants-only.yaml" '
assert [o["kind"] for o in objs] == ["LumenoreConnector"], [o["kind"] for o in objs]
assert objs[0]["spec"]["credentials"] == {"secretName": "umbrella-lumenore", "apiTokenKey": "token"}
'

section "tenants and the CRD (.Capabilities.APIVersions)"
tenants_vals="$CHART/ci/tenants-values.yaml"
if helm template "$RELEASE" "$CHART" -n "$NS" -f "$tenants_vals" >"$work/nocrd.log" 2>&1; then
  fail "tenants rendered although the cluster's API has no $LC_API"
elif grep -qF "Install the CRD first" "$work/nocrd.log" && grep -qF "then add the tenants with helm upgrade" "$work/nocrd.log" \
     && grep -qF -- "--api-versions $LC_API" "$work/nocrd.log"; then
  pass "tenants without the CRD in the API: fails, saying to install the CRD first, then helm upgrade (offline: --api-versions)"
else
  fail "tenants without the CRD: failed without the expected instructions"; indent <"$work/nocrd.log"
fi
n=$(helm template "$RELEASE" "$CHART" -n "$NS" -f "$tenants_vals" --api-versions "$LC_API" | "$PY" .ci/k8s_manifests.py count-kind LumenoreConnector /dev/stdin)
if [[ "$n" == 4 ]]; then pass "tenants with $LC_API in the API: 4 LumenoreConnectors"; else fail "tenants with the CRD in the API rendered $n LumenoreConnectors (expected 4)"; fi
n=$(helm template "$RELEASE" "$CHART" -n "$NS" -f "$tenants_vals" --set crds.checkForTenants=false | "$PY" .ci/k8s_manifests.py count-kind LumenoreConnector /dev/stdin)
if [[ "$n" == 4 ]]; then pass "crds.checkForTenants=false: tenants render without the CRD in the API (tools that order CRDs first)"; else fail "crds.checkForTenants=false rendered $n LumenoreConnectors (expected 4)"; fi
if helm template "$RELEASE" "$CHART" -n "$NS" >/dev/null 2>"$work/nocrd.log"; then
  pass "no tenants: renders without the CRD in the API (the first install that creates it)"
else
  fail "no tenants, no CRD in the API"; indent <"$work/nocrd.log"
fi

section "monitoring.scrapeNamespace (the connectors' NetworkPolicies admit the scraper)"
assert_render "namespace-scoped: monitoring.scrapeNamespace=monitoring passes --monitoring-namespace=monitoring" \
  "$work/render-namespace-scoped.yaml" '
c = kinds("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
assert "--monitoring-namespace=monitoring" in c["args"], c["args"]
'
assert_render "default: no --monitoring-namespace" "$work/render-default.yaml" '
c = kinds("Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
assert not [a for a in c["args"] if a.startswith("--monitoring-namespace")], c["args"]
'

# ---- 4. negative tests ---------------------------------------------------------------------------
section "values.schema.json rejects bad values (failure and message asserted)"
for f in "$CHART"/tests/bad-values/*.yaml; do
  expect=$(expect_line "$f")
  [[ -n "$expect" ]] || { fail "$f: no '# expect:' first line"; continue; }
  if helm template "$RELEASE" "$CHART" -n "$NS" --api-versions "$LC_API" -f "$f" >"$work/neg.log" 2>&1; then
    fail "$f was ACCEPTED (expected: $expect)"
  elif grep -qF -- "$expect" "$work/neg.log"; then
    pass "$(basename "$f"): rejected with \"$expect\""
  else
    fail "$f rejected, but without \"$expect\":"; indent <"$work/neg.log"
  fi
done

section "the validators reject bad manifests (unknown fields, broken rules)"
for f in "$CHART"/tests/bad-manifests/*.yaml; do
  expect=$(expect_line "$f")
  rm -rf "$work/neg"
  "$PY" .ci/k8s_manifests.py split --crd="$CRD" "$work/neg" "$f" >/dev/null
  if compgen -G "$work/neg/cr/*.json" >/dev/null; then
    check-jsonschema --schemafile "$work/lumenoreconnector.schema.json" "$work"/neg/cr/*.json >"$work/neg.log" 2>&1 && rc=0 || rc=$?
  else
    kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$work"/neg/builtin/*.yaml >"$work/neg.log" 2>&1 && rc=0 || rc=$?
  fi
  if [[ $rc == 0 ]]; then
    fail "$f was ACCEPTED (expected: $expect)"
  elif grep -qF -- "$expect" "$work/neg.log"; then
    pass "$(basename "$f"): rejected with \"$expect\""
  else
    fail "$f rejected, but without \"$expect\":"; indent <"$work/neg.log"
  fi
done

# ---- 5. examples and docs ---------------------------------------------------------------------
if [[ "${SKIP_EXAMPLES:-0}" != 1 && -f .ci/check-examples.sh ]]; then
  section "examples (.ci/check-examples.sh)"
  if LC_SCHEMA="$work/lumenoreconnector.schema.json" bash .ci/check-examples.sh 2>&1 | indent; then
    pass ".ci/check-examples.sh"
  else
    fail ".ci/check-examples.sh"
  fi
fi
if [[ "${SKIP_DOCS:-0}" != 1 && -f .ci/gen-values-doc.sh ]]; then
  section "docs/install.md values table (.ci/gen-values-doc.sh --check)"
  if bash .ci/gen-values-doc.sh --check >"$work/doc.log" 2>&1; then
    pass "docs/install.md values reference matches values.schema.json"
  else
    fail "docs/install.md values reference is stale: run bash .ci/gen-values-doc.sh"; indent <"$work/doc.log"
  fi
fi

printf '\n%d checks, %d failed, %ss\n' "$checks" "$fails" "$(($(date +%s) - start))"
[[ $fails == 0 ]]
