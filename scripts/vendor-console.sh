#!/usr/bin/env bash
# Refreshes the console's vendored third-party code from the npm registry:
# cytoscape's ES-module build and its licence, into crates/api/console/vendor/.
#
#   scripts/vendor-console.sh            # again, at the version VENDORED names
#   scripts/vendor-console.sh 3.36.0     # another version
#
# The tarball is checked against the registry's sha512 integrity before
# anything is replaced; VENDORED records the version, the tarball, its
# integrity and the sha256 of the file embedded in the binary (a unit test
# of the api crate checks that the file matches it). Users never run this:
# the files are committed and embedded with include_bytes!.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
dir="$here/crates/api/console/vendor"
version="${1:-$(sed -n 's/^version: //p' "$dir/VENDORED")}"
[ -n "$version" ] || { echo "no version given and none in $dir/VENDORED" >&2; exit 2; }

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
curl -fsS --max-time 60 "https://registry.npmjs.org/cytoscape/$version" -o "$tmp/meta.json"
read -r tarball integrity < <(python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))["dist"]
print(d["tarball"], d["integrity"])' "$tmp/meta.json")
case "$integrity" in sha512-*) ;; *) echo "unexpected integrity $integrity" >&2; exit 1 ;; esac
curl -fsS --max-time 120 "$tarball" -o "$tmp/pkg.tgz"
got="sha512-$(openssl dgst -sha512 -binary "$tmp/pkg.tgz" | base64 -w0)"
if [ "$got" != "$integrity" ]; then
  echo "integrity mismatch for $tarball: registry $integrity, downloaded $got" >&2
  exit 1
fi
tar -xzf "$tmp/pkg.tgz" -C "$tmp" package/dist/cytoscape.esm.min.mjs package/LICENSE package/package.json
license="$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["license"])' "$tmp/package/package.json")"
cp "$tmp/package/dist/cytoscape.esm.min.mjs" "$dir/cytoscape.esm.min.js"
cp "$tmp/package/LICENSE" "$dir/cytoscape.LICENSE"
cat > "$dir/VENDORED" <<EOT
name: cytoscape
version: $version
license: $license (cytoscape.LICENSE)
tarball: $tarball
integrity: $integrity
file: cytoscape.esm.min.js <- package/dist/cytoscape.esm.min.mjs
sha256: $(sha256sum "$dir/cytoscape.esm.min.js" | cut -d' ' -f1)
EOT
echo "cytoscape $version vendored in $dir"
