#!/usr/bin/env bash
# Builds the API documentation of the public modules from their DocC catalogs (Sources/*/*.docc)
# into docs/api/<Module>, failing on any warning (a broken symbol link, say), so the catalogs
# cannot rot. Open docs/api/ForkKit/index.html with a static web server, or pass --preview MODULE.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
output=${DOCS_OUTPUT:-docs/api}
if [[ "${1:-}" == "--preview" ]]; then
    exec swift package --disable-sandbox preview-documentation --target "${2:-ForkKit}"
fi
for module in MessagePack ForkKit ForkRPC ForkPool ForkActors; do
    mkdir -p "$output/$module"
    swift package --allow-writing-to-directory "$output" generate-documentation \
        --target "$module" --output-path "$output/$module" --warnings-as-errors \
        --transform-for-static-hosting --hosting-base-path "$module"
done
echo "documentation in $output/{MessagePack,ForkKit,ForkRPC,ForkPool,ForkActors}" >&2
