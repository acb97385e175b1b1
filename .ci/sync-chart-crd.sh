#!/usr/bin/env bash
# Copy the generated CRDs (crds/) into the chart (charts/lumenore-operator/files/crds/), where the
# chart's CRD templates read them. Run after `lumenore-operator crdgen --out crds`;
# .ci/check-charts.sh fails while they differ.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
for f in lumenore.io_lumenoreconnectors.yaml lumenore.io_lumenorefleetrollouts.yaml; do
  src="$repo/crds/$f"
  dst="$repo/charts/lumenore-operator/files/crds/$f"
  mkdir -p "$(dirname "$dst")"
  if cmp -s "$src" "$dst"; then echo "chart CRD $f already up to date"; else cp "$src" "$dst"; echo "updated $dst"; fi
done
