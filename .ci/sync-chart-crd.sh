#!/usr/bin/env bash
# Copy the generated CRD (crds/) into the chart (charts/lumenore-operator/files/crds/), where the
# chart's CRD template reads it. Run after `lumenore-operator crdgen --out crds`;
# .ci/check-charts.sh fails while the two differ.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
src="$repo/crds/lumenore.io_lumenoreconnectors.yaml"
dst="$repo/charts/lumenore-operator/files/crds/lumenore.io_lumenoreconnectors.yaml"
mkdir -p "$(dirname "$dst")"
if cmp -s "$src" "$dst"; then echo "chart CRD already up to date"; else cp "$src" "$dst"; echo "updated $dst"; fi
