#!/bin/sh
# Refresh the vendored uPlot (https://github.com/leeoniya/uPlot, MIT) from npm.
# Usage: bnproxy/dashboard/refresh-vendor.sh [VERSION]   (default: latest)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
version=${1:-$(npm view uplot version)}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
(cd "$scratch" && npm pack --silent "uplot@$version" >/dev/null && tar xzf uplot-*.tgz)
cp "$scratch/package/dist/uPlot.iife.min.js" "$scratch/package/dist/uPlot.min.css" \
   "$scratch/package/LICENSE" "$here/vendor/"
sha=$(sha256sum "$here/vendor/uPlot.iife.min.js" | cut -d' ' -f1)
printf 'uplot %s (npm), uPlot.iife.min.js sha256 %s\n' "$version" "$sha" > "$here/vendor/VERSION"
echo "vendored uplot $version into $here/vendor"
