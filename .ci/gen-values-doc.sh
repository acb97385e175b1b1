#!/usr/bin/env bash
# Regenerate (or with --check, verify) the values reference table in docs/install.md from
# charts/lumenore-operator/values.schema.json (defaults from values.yaml, checked against the schema).
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=env.sh
source "$repo/.ci/env.sh"
exec "$TOOLS_DIR/venv/bin/python" "$repo/.ci/gen-values-doc.py" "$@"
