# shellcheck shell=bash
# Source this (after .ci/install-tools.sh has run) to put the project's pinned
# tools first on PATH:
#   $TOOLS_DIR/venv/bin               python (mcp 2.x), kubernetes-validate, check-jsonschema
#   $TOOLS_DIR/bin                    helm v4, kubectl v1.35, conformance, mcp-inspector (oha)
#   $TOOLS_DIR/node22/node_modules/.bin   node 22 (the machine's own /usr/bin/node is v20)
# Safe under `set -euo pipefail` and when sourced more than once.
_ci_env_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ -z "${TOOLS_DIR:-}" ]]; then
  TOOLS_DIR="$(git -C "$_ci_env_dir" rev-parse --show-toplevel 2>/dev/null || (cd "$_ci_env_dir/.." && pwd))/.tools"
fi
export TOOLS_DIR
for _ci_env_p in "$TOOLS_DIR/node22/node_modules/.bin" "$TOOLS_DIR/bin" "$TOOLS_DIR/venv/bin"; do
  PATH=":$PATH:"
  PATH="${PATH//:$_ci_env_p:/:}"
  PATH="${PATH#:}"
  PATH="$_ci_env_p:${PATH%:}"
done
export PATH
unset _ci_env_dir _ci_env_p
