#!/usr/bin/env bash
# Builds the two container images (connector/Containerfile, operator/Containerfile) with buildah and
# checks them:
#   1. static release binaries (glibc, +crt-static) built with cargo, checked to be static
#   2. `buildah bud` of each image from a small staging context (binary, CA bundle, passwd/group,
#      nsswitch.conf); reproducible timestamps (the last commit's time)
#   3. the image holds exactly those files (no shell, no package manager) and runs as 65532:65532
#   4. each image runs `--version`; the operator image's `crdgen` prints exactly crds/
#   5. the connector image serves: --backend embedded --listen 127.0.0.1:PORT in the background,
#      GET /healthz == 200, MCP initialize + tools/list list the 9 tools; and with the Lumenore
#      backend its TLS client starts with the image's CA bundle (and does not without it)
#   6. prints the image sizes (uncompressed, and gzip-compressed layers as pushed to a registry)
# Usage: bash .ci/build-images.sh         (root or rootless buildah; after bash .ci/install-tools.sh)
# Env:   CARGO_TARGET_DIR    cargo target dir (default <repo>/target)
#        SKIP_CARGO=1        use the binaries already in $CARGO_TARGET_DIR (no cargo build)
#        CARGO_LOCKED=0      build without --locked (default: --locked, Cargo.lock must be current)
#        IMAGE_PREFIX        image name prefix (default localhost/)
#        KEEP_IMAGES=0       remove the images at the end (default: keep them)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
# shellcheck source=env.sh
source .ci/env.sh

TARGET=x86_64-unknown-linux-gnu
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$repo/target}"
BIN_DIR="$CARGO_TARGET_DIR/$TARGET/release"
PREFIX="${IMAGE_PREFIX:-localhost/}"
BUILDAH=(buildah --storage-driver vfs)
CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
PORT="${PORT:-18080}"

command -v buildah >/dev/null || { echo "buildah missing: bash .ci/install-tools.sh" >&2; exit 2; }
for t in curl readelf tar; do command -v "$t" >/dev/null || { echo "$t missing" >&2; exit 2; }; done
[[ -s "$CA_BUNDLE" ]] || { echo "no CA bundle at $CA_BUNDLE (apt-get install ca-certificates)" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/build-images.XXXXXX")"
containers=()
bg_pid=""
cleanup() {
  if [[ -n "$bg_pid" ]] && kill -0 "$bg_pid" 2>/dev/null; then kill -TERM -- "-$bg_pid" 2>/dev/null || true; fi
  for c in "${containers[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1 || true; done
  rm -rf "$work"
}
trap cleanup EXIT
checks=0
fails=0
pass() { checks=$((checks + 1)); printf '  ok    %s\n' "$*"; }
fail() { checks=$((checks + 1)); fails=$((fails + 1)); printf '  FAIL  %s\n' "$*"; }
section() { printf '\n== %s\n' "$*"; }
start=$(date +%s)

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
epoch=$(git log -1 --format=%ct 2>/dev/null || date +%s)
created=$(date -u -d "@$epoch" +%Y-%m-%dT%H:%M:%SZ)

# ---- 1. static binaries --------------------------------------------------------------------
section "static binaries ($TARGET, +crt-static) in $BIN_DIR"
if [[ "${SKIP_CARGO:-0}" != 1 ]]; then
  t0=$(date +%s)
  locked=(--locked)
  [[ "${CARGO_LOCKED:-1}" == 0 ]] && locked=()
  RUSTFLAGS='-C target-feature=+crt-static' cargo build "${locked[@]}" --release --target "$TARGET" \
    -p lumenore-connector -p lumenore-operator
  echo "  cargo build: $(($(date +%s) - t0))s"
fi
for b in lumenore-connector lumenore-operator; do
  f="$BIN_DIR/$b"
  [[ -x "$f" ]] || { fail "$f missing (run without SKIP_CARGO=1)"; continue; }
  if readelf -lW "$f" | grep -q 'INTERP' || readelf -dW "$f" | grep -q 'NEEDED'; then
    fail "$b is dynamically linked"; readelf -dW "$f" | grep NEEDED | sed 's/^/        /'
  else
    pass "$b is static: no INTERP, no NEEDED ($(du -h "$f" | cut -f1))"
  fi
done
((fails == 0)) || { echo "binaries not usable"; exit 1; }

# ---- 2. build --------------------------------------------------------------------------------
stage() { # component -> context dir
  local c=$1 ctx="$work/ctx-$1"
  mkdir -p "$ctx"
  install -m 0555 "$BIN_DIR/lumenore-$c" "$ctx/lumenore-$c"
  install -m 0444 "$CA_BUNDLE" "$ctx/ca-certificates.crt"
  local root="$ctx/rootfs"
  mkdir -p "$root/etc" "$root/tmp"
  printf 'root:x:0:0:root:/:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/nonexistent:/sbin/nologin\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$root/etc/group"
  printf 'hosts: files dns\n' >"$root/etc/nsswitch.conf"
  chmod 0444 "$root"/etc/*
  chmod 1777 "$root/tmp"
  tar --sort=name --mtime="@$epoch" --owner=0 --group=0 --numeric-owner -cf "$ctx/rootfs.tar" -C "$root" etc tmp
  rm -rf "$root"
  touch -d "@$epoch" "$ctx"/*
  echo "$ctx"
}
section "buildah bud (version $version, revision ${revision:0:12}, created $created)"
for c in connector operator; do
  ctx=$(stage "$c")
  previous=$("${BUILDAH[@]}" images -q "${PREFIX}lumenore-$c:$version" 2>/dev/null || true)
  t0=$(date +%s)
  if "${BUILDAH[@]}" bud --isolation chroot --quiet --timestamp "$epoch" \
      --build-arg VERSION="$version" --build-arg REVISION="$revision" --build-arg CREATED="$created" \
      -f "$repo/$c/Containerfile" -t "${PREFIX}lumenore-$c:$version" "$ctx" >"$work/bud-$c.log" 2>&1; then
    pass "built ${PREFIX}lumenore-$c:$version in $(($(date +%s) - t0))s (image id $(tail -1 "$work/bud-$c.log" | cut -c1-12))"
    # The previous build of this tag, now untagged, is removed (only that image, by id).
    if [[ -n "$previous" && "$(tail -1 "$work/bud-$c.log")" != "$previous"* ]]; then
      "${BUILDAH[@]}" rmi "$previous" >/dev/null 2>&1 || true
    fi
  else
    fail "buildah bud $c/Containerfile"; sed 's/^/        /' "$work/bud-$c.log"
  fi
done
((fails == 0)) || exit 1

# ---- 3. contents, user, labels -------------------------------------------------------------------
section "image contents and configuration"
for c in connector operator; do
  img="${PREFIX}lumenore-$c:$version"
  ctr=$("${BUILDAH[@]}" from --name "check-$c-$$" "$img")
  containers+=("$ctr")
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  files=$(cd "$mnt" && find . -mindepth 1 \( -type f -o -type l \) | sort | tr '\n' ' ')
  tmpmode=$(stat -c '%a' "$mnt/tmp" 2>/dev/null || echo missing)
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  want="./etc/group ./etc/nsswitch.conf ./etc/passwd ./etc/ssl/certs/ca-certificates.crt ./usr/local/bin/lumenore-$c "
  if [[ "$files" == "$want" ]]; then
    pass "$c: only $(echo "$files" | wc -w) files: $files(no shell, no package manager)"
  else
    fail "$c: unexpected files: $files"
  fi
  "${BUILDAH[@]}" inspect --type image "$img" >"$work/inspect-$c.json"
  cfg() { "$TOOLS_DIR/venv/bin/python" -c 'import json,sys; c=json.load(open(sys.argv[1]))["OCIv1"]["config"]; print(json.dumps(c.get(sys.argv[2])) if sys.argv[2] != "User" else c.get("User", ""))' "$work/inspect-$c.json" "$1"; }
  [[ "$tmpmode" == 1777 ]] && pass "$c: /tmp is an empty directory, mode 1777" || fail "$c: /tmp mode $tmpmode"
  user=$(cfg User)
  entry=$(cfg Entrypoint)
  labels=$(cfg Labels)
  [[ "$user" == "65532:65532" ]] && pass "$c: USER $user" || fail "$c: USER is '$user'"
  [[ "$entry" == "[\"/usr/local/bin/lumenore-$c\"]" ]] && pass "$c: ENTRYPOINT $entry" || fail "$c: ENTRYPOINT $entry"
  if "$TOOLS_DIR/venv/bin/python" - "$labels" "$version" "$revision" <<'EOF'; then
import json, sys
l = json.loads(sys.argv[1])
need = ["title", "description", "version", "revision", "created", "licenses", "source", "vendor"]
missing = [k for k in need if not l.get(f"org.opencontainers.image.{k}")]
assert not missing, f"missing OCI labels: {missing}"
assert l["org.opencontainers.image.version"] == sys.argv[2] and l["org.opencontainers.image.revision"] == sys.argv[3]
EOF
    pass "$c: OCI labels (title, description, version, revision, created, licenses, source, vendor)"
  else
    fail "$c: OCI labels: $labels"
  fi
done

# ---- 4. run --version / crdgen ---------------------------------------------------------------
section "buildah run --isolation chroot"
run() { # container cmd...
  "${BUILDAH[@]}" run --isolation chroot "$@"
}
for c in connector operator; do
  out=$(run "check-$c-$$" -- "/usr/local/bin/lumenore-$c" --version 2>&1) && rc=0 || rc=$?
  if [[ $rc == 0 && "$out" == *"$version"* ]]; then pass "$c: --version -> $out"; else fail "$c: --version (rc $rc): $out"; fi
done
if run "check-operator-$$" -- /usr/local/bin/lumenore-operator crdgen >"$work/crd.yaml" 2>"$work/crd.err" \
    && cmp -s "$work/crd.yaml" crds/lumenore.io_lumenoreconnectors.yaml; then
  pass "operator: 'crdgen' in the image prints exactly crds/lumenore.io_lumenoreconnectors.yaml"
else
  fail "operator: crdgen output differs from crds/ (stale crds/ or binary?)"; diff <(cat "$work/crd.yaml") crds/lumenore.io_lumenoreconnectors.yaml | head -10 | sed 's/^/        /' || true
fi

for f in charts/lumenore-operator/ci/*-values.yaml; do
  name=$(basename "$f" -values.yaml)
  mapfile -t args < <(helm template lumenore charts/lumenore-operator -n lumenore-system -f "$f" \
    | "$TOOLS_DIR/venv/bin/python" .ci/k8s_manifests.py operator-args /dev/stdin)
  ((${#args[@]})) || continue
  if run "check-operator-$$" -- /usr/local/bin/lumenore-operator "${args[@]}" --help >/dev/null 2>"$work/args.log"; then
    pass "operator: the ${#args[@]} flags the chart renders with ci/$name-values.yaml parse"
  else
    fail "operator: rejects the chart's flags (ci/$name-values.yaml): ${args[*]}"; sed 's/^/        /' "$work/args.log"
  fi
done

# ---- 5. the connector serves -------------------------------------------------------------------
# `buildah run --isolation chroot` gives the process the host's network namespace (chroot isolation
# creates no network namespace), so a server listening on 127.0.0.1:PORT inside is reachable from
# the host at the same address.
wait_http() { # url seconds -> prints the status code
  local url=$1 n=$(($2 * 10)) code
  for ((i = 0; i < n; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$url" || true)
    [[ "$code" != "000" ]] && { echo "$code"; return 0; }
    kill -0 "$bg_pid" 2>/dev/null || { echo "exited"; return 1; }
    sleep 0.1
  done
  echo "timeout"
  return 1
}
stop_bg() {
  if [[ -n "$bg_pid" ]]; then
    kill -TERM -- "-$bg_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$bg_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$bg_pid" 2>/dev/null || true
    wait "$bg_pid" 2>/dev/null || true
    bg_pid=""
  fi
}
if curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$PORT/"; then
  fail "port $PORT is already in use (set PORT=...)"
else
  section "connector image: --backend embedded --listen 127.0.0.1:$PORT"
  setsid "${BUILDAH[@]}" run --isolation chroot "check-connector-$$" -- /usr/local/bin/lumenore-connector \
    --backend embedded --listen "127.0.0.1:$PORT" >"$work/connector.log" 2>&1 &
  bg_pid=$!
  t0=$(date +%s%N)
  code=$(wait_http "http://127.0.0.1:$PORT/healthz" 30) || true
  if [[ "$code" == 200 ]]; then
    pass "GET /healthz -> 200 ($(( ($(date +%s%N) - t0) / 1000000 )) ms after start)"
  else
    fail "GET /healthz -> $code"; tail -20 "$work/connector.log" | sed 's/^/        /'
  fi
  # The port opens before the demo catalog is loaded; /readyz turns 200 once it is.
  for ((i = 0; i < 600; i++)); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/readyz" || true)
    [[ "$code" == 200 ]] && break
    sleep 0.1
  done
  [[ "$code" == 200 ]] && pass "GET /readyz -> 200 ($(( ($(date +%s%N) - t0) / 1000000 )) ms after start)" \
    || fail "GET /readyz -> $code"
  mcp() { # json-rpc body -> response body
    curl -s --max-time 10 -X POST "http://127.0.0.1:$PORT/mcp" \
      -H 'Content-Type: application/json' -H 'Accept: application/json, text/event-stream' \
      -H 'MCP-Protocol-Version: 2025-11-25' -d "$1"
  }
  init=$(mcp '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"build-images.sh","version":"1"}}}')
  list=$(mcp '{"jsonrpc":"2.0","id":2,"method":"tools/list","params":{}}')
  if "$TOOLS_DIR/venv/bin/python" - "$init" "$list" <<'EOF' >"$work/mcp.log" 2>&1; then
import json, sys
def body(s):
    s = s.strip()
    if s.startswith("{"):
        return json.loads(s)
    data = [l[5:].strip() for l in s.splitlines() if l.startswith("data:")]  # SSE
    return json.loads(data[-1])
init, tools = body(sys.argv[1]), body(sys.argv[2])
assert "result" in init, f"initialize: {init}"
names = sorted(t["name"] for t in tools["result"]["tools"])
want = sorted(["get_dataset_metadata", "get_metadata_info", "nlq_to_data", "get_trend_data", "get_prediction_data",
               "get_outlier_data", "get_correlation_data", "get_change_data", "get_pareto_data"])
assert names == want, f"tools: {names}"
print(f"server {init['result']['serverInfo']['name']} {init['result']['serverInfo'].get('version')}, "
      f"protocol {init['result']['protocolVersion']}, {len(names)} tools")
EOF
    pass "MCP initialize + tools/list: $(cat "$work/mcp.log")"
  else
    fail "MCP tools/list"; sed 's/^/        /' "$work/mcp.log"; echo "        initialize: ${init:0:300}"; echo "        tools/list: ${list:0:300}"
  fi
  stop_bg

  section "connector image: Lumenore backend (TLS client needs the image's CA bundle)"
  # The backend's TLS client (reqwest + rustls platform verifier) loads the system CA roots when it
  # is built, at start; it refuses to start with none. The server URL is never contacted here.
  for variant in with-ca without-ca; do
    extra=()
    [[ $variant == without-ca ]] && extra=(--env SSL_CERT_FILE=/nonexistent.pem)
    setsid "${BUILDAH[@]}" run --isolation chroot "${extra[@]}" --env LUMENORE_API_KEY=not-a-real-key \
      "check-connector-$$" -- /usr/local/bin/lumenore-connector --backend lumenore \
      --listen "127.0.0.1:$PORT" >"$work/connector-$variant.log" 2>&1 &
    bg_pid=$!
    code=$(wait_http "http://127.0.0.1:$PORT/healthz" 15) || true
    if [[ $variant == with-ca ]]; then
      if [[ "$code" == 200 ]]; then pass "with the CA bundle: starts, GET /healthz -> 200"
      else fail "with the CA bundle: /healthz -> $code"; tail -5 "$work/connector-$variant.log" | sed 's/^/        /'; fi
    else
      if [[ "$code" != 200 ]]; then
        pass "without CA roots (SSL_CERT_FILE=/nonexistent.pem): refuses to start ($(grep -o 'could not build the HTTP client[^"]*' "$work/connector-$variant.log" | head -1 || echo "exit"))"
      else
        echo "  note  without CA roots the connector still started: the TLS roots are loaded lazily"
      fi
    fi
    stop_bg
  done
fi

# ---- 5b. DNS in a scratch image -----------------------------------------------------------------
# The connector resolves its server's name with static glibc's getaddrinfo (reqwest's default
# resolver). Static glibc has the files and dns NSS modules built in; prove that names resolve in a
# FROM scratch image with the images' nsswitch.conf, using a static test program linked against the
# same libc.a (localhost through /etc/hosts, and DNS_TEST_HOST through DNS when the host resolves it).
section "DNS resolution in a FROM scratch image (static glibc getaddrinfo)"
if command -v gcc >/dev/null; then
  dns_ctx="$work/ctx-dns"
  mkdir -p "$dns_ctx"
  gcc -static -O2 -o "$dns_ctx/getaddrinfo" .ci/testdata/getaddrinfo.c 2>/dev/null
  tar -xf "$work/ctx-connector/rootfs.tar" -C "$dns_ctx" etc 2>/dev/null || true
  printf 'FROM scratch\nCOPY etc /etc\nCOPY getaddrinfo /getaddrinfo\nUSER 65532:65532\n' >"$dns_ctx/Containerfile"
  dns_host="${DNS_TEST_HOST:-deb.debian.org}"
  names=(localhost)
  getent hosts "$dns_host" >/dev/null 2>&1 && names+=("$dns_host")
  if "${BUILDAH[@]}" bud --isolation chroot --quiet -t "localhost/lumenore-dns-check:$$" "$dns_ctx" >/dev/null 2>&1; then
    dctr=$("${BUILDAH[@]}" from --name "check-dns-$$" "localhost/lumenore-dns-check:$$")
    containers+=("$dctr")
    if out=$(run "$dctr" -- /getaddrinfo "${names[@]}" 2>&1); then
      pass "resolved in scratch as 65532: $(echo "$out" | tr '\n' ' ')"
    else
      fail "getaddrinfo in scratch: $out"
    fi
    "${BUILDAH[@]}" rm "$dctr" >/dev/null 2>&1 || true
    "${BUILDAH[@]}" rmi "localhost/lumenore-dns-check:$$" >/dev/null 2>&1 || true
    ((${#names[@]} > 1)) || echo "  note  $dns_host does not resolve on this host: only /etc/hosts was checked"
  else
    fail "could not build the DNS check image"
  fi
else
  echo "  SKIP  gcc not installed: DNS check in scratch not run"
fi

# ---- 6. sizes --------------------------------------------------------------------------------------
section "image sizes"
for c in connector operator; do
  img="${PREFIX}lumenore-$c:$version"
  "${BUILDAH[@]}" push --quiet --compression-format gzip "$img" "oci:$work/oci-$c:latest" >/dev/null 2>&1
  compressed=$(find "$work/oci-$c/blobs" -type f -size +10k -printf '%s\n' | awk '{s+=$1} END {print s}')
  uncompressed=$("${BUILDAH[@]}" images --format '{{.Size}}' "$img")
  printf '  %-34s %10s uncompressed   %6.1f MB compressed layers (gzip)   binary %s\n' "$img" "$uncompressed" \
    "$(awk -v b="$compressed" 'BEGIN {print b / 1000000}')" "$(du -h "$BIN_DIR/lumenore-$c" | cut -f1)"
done

if [[ "${KEEP_IMAGES:-1}" == 0 ]]; then
  for c in connector operator; do "${BUILDAH[@]}" rmi "${PREFIX}lumenore-$c:$version" >/dev/null || true; done
fi
printf '\n%d checks, %d failed, %ss\n' "$checks" "$fails" "$(($(date +%s) - start))"
[[ $fails == 0 ]]
