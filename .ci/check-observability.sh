#!/usr/bin/env bash
# Checks of the fleet's alerts and dashboard (charts/lumenore-operator/files/monitoring/), all offline:
#   1. promtool check rules (syntax, templates of the annotations) and promtool test rules
#      (tests/alerts/*.test.yaml): every alert has a test where it fires and one where it stays silent
#   2. every alert has severity, summary and a runbook_url whose section exists in docs/runbook.md
#   3. every alert and dashboard query parses (.ci/check_queries.py, PyPI promql-parser) and uses only this
#      project's metrics; the check against LIVE /metrics scrapes of both binaries runs in the cargo tests
#      (e2e/tests/observability.rs, operator/tests/observability.rs)
#   4. the chart renders them: PrometheusRule (its spec passes promtool; runbookBaseUrl applied), dashboard
#      ConfigMap (valid for Kubernetes, sidecar label, JSON equal to the file), PodMonitor; none by default
# Usage: bash .ci/check-observability.sh     (after bash .ci/install-tools.sh)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=env.sh
source .ci/env.sh

CHART=charts/lumenore-operator
RULES=$CHART/files/monitoring/alerts.yaml
DASHBOARD=$CHART/files/monitoring/lumenore-fleet-dashboard.json
PY="$TOOLS_DIR/venv/bin/python"
K8S_VERSION=1.35.0

for t in promtool helm kubernetes-validate; do
  command -v "$t" >/dev/null || { echo "missing tool: $t (run: bash .ci/install-tools.sh)" >&2; exit 2; }
done
[[ -x "$PY" ]] && "$PY" -c "import promql_parser, yaml" 2>/dev/null \
  || { echo "missing $PY with promql-parser (run: bash .ci/install-tools.sh)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/check-observability.XXXXXX")"
trap 'rm -rf "$work"' EXIT
checks=0
fails=0
pass() { checks=$((checks + 1)); printf '  ok    %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf '  FAIL  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
indent() { sed 's/^/        /'; }
run() { # label command...
  local label=$1; shift
  if "$@" >"$work/run.log" 2>&1; then pass "$label"; else fail "$label"; indent <"$work/run.log"; fi
}

section "promtool ($(promtool --version 2>&1 | awk 'NR==1{print $3}'))"
run "promtool check rules $RULES" promtool check rules "$RULES"
run "promtool test rules $CHART/tests/alerts/*.test.yaml" promtool test rules "$CHART"/tests/alerts/*.test.yaml
run "every alert is tested firing and silent; severity, summary and a runbook section each" \
  "$PY" - "$RULES" docs/runbook.md "$CHART"/tests/alerts/*.test.yaml <<'EOF'
import re, sys, yaml
rules_path, runbook_path, *tests = sys.argv[1:]
alerts = [r for g in yaml.safe_load(open(rules_path))["groups"] for r in g["rules"] if "alert" in r]
# GitHub's heading anchors: lowercase, punctuation dropped, spaces to '-'.
anchors = {re.sub(r"[^a-z0-9 _-]", "", h.strip().lower()).replace(" ", "-")
           for h in re.findall(r"^#+ (.+)$", open(runbook_path).read(), re.M)}
fires, silent = set(), set()
for path in tests:
    for t in yaml.safe_load(open(path))["tests"]:
        for a in t.get("alert_rule_test", []):
            (fires if a.get("exp_alerts") else silent).add(a["alertname"])
problems = []
for r in alerts:
    name, ann = r["alert"], r.get("annotations", {})
    if name not in fires: problems.append(f"{name}: no test where it fires")
    if name not in silent: problems.append(f"{name}: no test where it stays silent")
    if r.get("labels", {}).get("severity") not in ("critical", "warning"): problems.append(f"{name}: severity")
    if not ann.get("summary"): problems.append(f"{name}: no summary")
    url = ann.get("runbook_url", "")
    if not url.startswith("https://github.com/Lumenore-Platform/lumenore-connector-fleet/blob/main/docs/runbook.md#"):
        problems.append(f"{name}: runbook_url {url!r} does not point into docs/runbook.md")
    elif url.split("#", 1)[1] not in anchors:
        problems.append(f"{name}: docs/runbook.md has no section #{url.split('#', 1)[1]}")
expected = {"LumenoreConnectorNotReady", "LumenoreBackendCredentialsRejected", "LumenoreConnectorErrorRatioHigh",
            "LumenoreConnectorLatencyHigh", "LumenoreOperatorReconcileFailing", "LumenoreTenantStalled",
            "LumenoreConnectorRegionMismatch", "LumenoreOperatorNotLeading"}
missing = expected - {r["alert"] for r in alerts}
if missing: problems.append(f"alerts missing: {sorted(missing)}")
print("\n".join(problems) or f"{len(alerts)} alerts: tested firing and silent, annotated, runbook sections exist")
sys.exit(1 if problems else 0)
EOF

section "queries parse and use only this project's metrics (live scrapes: cargo tests)"
run "$(basename "$DASHBOARD") and $(basename "$RULES"): $("$PY" .ci/check_queries.py "$RULES" "$DASHBOARD" 2>&1 | tail -n1)" \
  "$PY" .ci/check_queries.py "$RULES" "$DASHBOARD"
run "dashboard: unique panel ids, every panel on the \${datasource} variable, no overlapping panels" \
  "$PY" - "$DASHBOARD" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
panels = d["panels"]
ids = [p["id"] for p in panels]
assert len(ids) == len(set(ids)), "duplicate panel ids"
assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
cells = {}
for p in panels:
    if p["type"] != "row":
        assert p["datasource"]["uid"] == "${datasource}", p["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in p["targets"]), p["title"]
        assert p["targets"], p["title"]
    g = p["gridPos"]
    assert g["x"] + g["w"] <= 24, p["title"]
    for x in range(g["x"], g["x"] + g["w"]):
        for y in range(g["y"], g["y"] + g["h"]):
            assert (x, y) not in cells, f"{p['title']} overlaps {cells[(x, y)]}"
            cells[(x, y)] = p["title"]
names = [v["name"] for v in d["templating"]["list"]]
assert names == ["datasource", "namespace", "tenant"], names
print(f"{len(panels)} panels")
EOF

section "chart renders the monitoring objects"
RELEASE=lumenore
NS=lumenore-system
all_on=(--set monitoring.prometheusRule.enabled=true --set monitoring.dashboard.enabled=true
  --set monitoring.podMonitor.enabled=true --set monitoring.dashboard.namespace=grafana
  --set monitoring.prometheusRule.runbookBaseUrl=https://wiki.example.com/lumenore/runbook)
if helm template "$RELEASE" "$CHART" -n "$NS" --kube-version "$K8S_VERSION" "${all_on[@]}" >"$work/on.yaml" 2>"$work/tpl.log"; then
  pass "helm template with prometheusRule, dashboard and podMonitor enabled"
else
  fail "helm template with monitoring enabled"; indent <"$work/tpl.log"
fi
run "helm lint --strict with monitoring enabled" helm lint --strict "$CHART" -n "$NS" "${all_on[@]}"
run "rendered objects: PrometheusRule = alerts.yaml with the runbook base replaced, dashboard ConfigMap, PodMonitor" \
  "$PY" - "$work/on.yaml" "$RULES" "$DASHBOARD" "$work" <<'EOF'
import json, sys, yaml
rendered, rules_path, dash_path, work = sys.argv[1:]
objs = {o["kind"]: o for o in yaml.safe_load_all(open(rendered)) if o}
rule = objs["PrometheusRule"]
assert rule["apiVersion"] == "monitoring.coreos.com/v1" and rule["metadata"]["namespace"] == "lumenore-system"
want = open(rules_path).read().replace(
    "https://github.com/Lumenore-Platform/lumenore-connector-fleet/blob/main/docs/runbook.md",
    "https://wiki.example.com/lumenore/runbook")
assert rule["spec"] == yaml.safe_load(want), "PrometheusRule spec differs from alerts.yaml"
assert all(r["annotations"]["runbook_url"].startswith("https://wiki.example.com/lumenore/runbook#")
           for g in rule["spec"]["groups"] for r in g["rules"])
yaml.safe_dump(rule["spec"], open(f"{work}/rendered-rules.yaml", "w"))
cm = objs["ConfigMap"]
assert cm["metadata"]["namespace"] == "grafana" and cm["metadata"]["labels"]["grafana_dashboard"] == "1"
assert json.loads(cm["data"]["lumenore-fleet.json"]) == json.load(open(dash_path)), "dashboard JSON differs"
pm = objs["PodMonitor"]["spec"]
assert pm["selector"]["matchLabels"] == {"app.kubernetes.io/name": "lumenore-connector",
                                         "app.kubernetes.io/managed-by": "lumenore-operator"}
assert pm["namespaceSelector"] == {"any": True}
ep = pm["podMetricsEndpoints"][0]
assert ep["port"] == "http" and ep["path"] == "/metrics"
assert {r["targetLabel"] for r in ep["relabelings"]} == {"tenant", "region"}
yaml.safe_dump(cm, open(f"{work}/dashboard-cm.yaml", "w"))
EOF
run "rendered PrometheusRule spec passes promtool check rules" promtool check rules "$work/rendered-rules.yaml"
run "dashboard ConfigMap valid for Kubernetes $K8S_VERSION (--strict)" \
  kubernetes-validate -k "$K8S_VERSION" --strict --quiet "$work/dashboard-cm.yaml"
run "pod labels the PodMonitor selects and relabels are the ones the operator sets" \
  grep -q '"lumenore.io/tenant".into(), lc.spec.tenant' operator/src/builders.rs
helm template "$RELEASE" "$CHART" -n "$NS" >"$work/off.yaml"
if grep -qE '^kind: (PrometheusRule|PodMonitor)$' "$work/off.yaml" || grep -q 'grafana_dashboard' "$work/off.yaml"; then
  fail "defaults render monitoring objects (they must be opt-in)"
else
  pass "defaults render no PrometheusRule, PodMonitor or dashboard ConfigMap"
fi

printf '\n%d checks, %d failed\n' "$checks" "$fails"
[[ $fails == 0 ]]
