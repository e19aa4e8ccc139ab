#!/usr/bin/env bash
# Installs what imgrun's tests need on Debian bookworm, only what is missing (fast when all
# is present): Debian packages when running as root, and umoci (the export oracle).
# Not root: reports what is missing; the tests that need it skip (they fail when CI=true).
set -euo pipefail
cd "$(dirname "$0")/.."

# docker-registry: the real distribution registry of the integration tests;
# busybox-static, debootstrap and its keyring: test images; bubblewrap: launcher comparisons;
# util-linux: setpriv/unshare for rootless tests.
packages=(docker-registry busybox-static debootstrap debian-archive-keyring bubblewrap util-linux ca-certificates)

missing=()
for p in "${packages[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed'; then
		missing+=("$p")
	fi
done
if ((${#missing[@]})); then
	if [[ $(id -u) -eq 0 ]]; then
		echo "deps: installing ${missing[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -q
		apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
	else
		echo "deps: missing ${missing[*]} (run as root to install them; tests needing them skip)" >&2
	fi
fi

bash scripts/install-umoci.sh
