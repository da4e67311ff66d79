#!/usr/bin/env bash
# Builds the DocC documentation into .build/docs, failing on any warning
# (a broken symbol link in a doc comment, for instance): the Gantry catalog
# in Documentation/ with the umbrella module, and the API of each layer.
set -euo pipefail
cd "$(dirname "$0")/.."
swift package dump-symbol-graph --minimum-access-level public >/dev/null
graphs="$(swift build --show-bin-path)/../symbolgraph"
rm -rf .build/docs .build/docs-graphs && mkdir -p .build/docs
for module in Gantry GantryCore OCIImage Runtime Scheduler Reconciler Observability Compose Build GantryTesting; do
    mkdir -p ".build/docs-graphs/$module"
    cp "$graphs/$module".symbols.json ".build/docs-graphs/$module/"
    catalog=()
    if [ "$module" = Gantry ]; then catalog=(Documentation/Gantry.docc); fi
    docc convert "${catalog[@]}" \
        --additional-symbol-graph-dir ".build/docs-graphs/$module" \
        --fallback-display-name "$module" --fallback-bundle-identifier "org.gantry.$module" \
        --output-path ".build/docs/$module" --warnings-as-errors
done
echo "Documentation written to .build/docs"
