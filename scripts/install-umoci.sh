#!/usr/bin/env bash
# Builds umoci (the oracle the export test compares imgrun against) from the Go module
# proxy into $UMOCI_DIR (default /usr/local/bin as root, ~/.cache/imgrun-test/bin
# otherwise). `go install umoci@v0.6.0` refuses its replace directive, so this downloads
# the module source and builds it in its own module. Does nothing when it is installed.
set -euo pipefail
version=v0.6.0
if [[ $(id -u) -eq 0 ]]; then
	dir=${UMOCI_DIR:-/usr/local/bin}
else
	dir=${UMOCI_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imgrun-test/bin}
fi
if "$dir/umoci" --version 2>/dev/null | grep -q "umoci version ${version#v}"; then
	exit 0
fi
echo "deps: building umoci $version into $dir"
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export GOPATH=$work/gopath GOFLAGS=-modcacherw GOTOOLCHAIN=local CGO_ENABLED=0 GOWORK=off
json=$(cd "$work" && go mod download -json "github.com/opencontainers/umoci@$version") || true
src=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$json")
if [[ ! -d $src ]]; then
	echo "install-umoci: downloading umoci $version failed:" >&2
	echo "$json" >&2
	exit 1
fi
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
(cd "$work/src" && go build -trimpath -o "$work/umoci" ./cmd/umoci)
mkdir -p "$dir"
install -m 0755 "$work/umoci" "$dir/umoci"
"$dir/umoci" --version | head -1
