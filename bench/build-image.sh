#!/usr/bin/env bash
# build-image.sh: builds (once) the realistic test image the benchmark pulls: a debootstrap
# --variant=minbase bookworm base plus three layers captured as overlayfs upper dirs:
#   l2  compilers, python3, git, curl, libssl-dev ...
#   l3  nodejs + npm (~29,000 entries of small files)
#   l4  deletions: /usr/share/doc/* deleted (whiteouts), /usr/share/man and
#       /etc/apt/sources.list.d removed and recreated (opaque dirs), a user added.
# Then bench/mkimage turns them into an OCI image layout (gzip layers, overlay whiteouts
# converted to .wh. entries). Everything is cached in $BENCH_CACHE (default
# /var/cache/imgrun-bench); a later run reuses the trees and the layout. Needs root,
# debootstrap and Debian's mirror (apt's).
#
#   bench/build-image.sh            print the cached image's summary, building what is missing
#   BENCH_REBUILD=1 bench/...       rebuild the OCI layout from the cached trees
set -euo pipefail
B=${BENCH_CACHE:-/var/cache/imgrun-bench}
MIRROR=${BENCH_MIRROR:-http://deb.debian.org/debian}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$B"

# step N LOWERS CMD: runs CMD in a chroot of overlay(LOWERS), the changes land in $B/lN.
step() {
	local n=$1 lowers=$2
	shift 2
	rm -rf "$B/l$n" "$B/w$n" "$B/m$n"
	mkdir -p "$B/l$n" "$B/w$n" "$B/m$n"
	mount -t overlay overlay -o "lowerdir=$lowers,upperdir=$B/l$n,workdir=$B/w$n" "$B/m$n"
	cp /etc/resolv.conf "$B/m$n/etc/resolv.conf"
	mount -t proc proc "$B/m$n/proc"
	mount --bind /dev "$B/m$n/dev"
	local rc=0
	chroot "$B/m$n" /bin/sh -c "$*" >"$B/l$n.log" 2>&1 || rc=$?
	umount "$B/m$n/dev" "$B/m$n/proc"
	umount "$B/m$n"
	rm -rf "$B/w$n"
	[[ $rc -eq 0 ]] || { echo "build-image: step $n failed, see $B/l$n.log" >&2; exit 1; }
	echo "l${n}ok" >>"$B/steps.log"
}
done_step() { grep -qx "l$1ok" "$B/steps.log" 2>/dev/null; }

if [[ ! -x $B/base/bin/sh ]]; then
	command -v debootstrap >/dev/null || apt-get install -y -q debootstrap </dev/null
	echo "build-image: debootstrap bookworm into $B/base (a few minutes)"
	rm -rf "$B/base" "$B/steps.log"
	debootstrap --variant=minbase bookworm "$B/base" "$MIRROR" >"$B/debootstrap.log" 2>&1
fi
apt_opts='-y -q -o Dpkg::Use-Pty=0 --no-install-recommends'
if ! done_step 2; then
	echo "build-image: layer 2 (toolchain)"
	step 2 "$B/base" "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install $apt_opts \
		gcc g++ make libc6-dev python3 git curl ca-certificates libssl-dev zlib1g-dev procps xz-utils bzip2"
fi
if ! done_step 3; then
	echo "build-image: layer 3 (nodejs, npm)"
	step 3 "$B/l2:$B/base" "DEBIAN_FRONTEND=noninteractive apt-get install $apt_opts nodejs npm"
fi
if ! done_step 4; then
	echo "build-image: layer 4 (deletions)"
	step 4 "$B/l3:$B/l2:$B/base" "rm -rf /usr/share/doc/* && rm -rf /usr/share/man && mkdir /usr/share/man && \
		rm -rf /etc/apt/sources.list.d && mkdir /etc/apt/sources.list.d && echo '# none' >/etc/apt/sources.list.d/none.list && \
		useradd -m -u 1000 -s /bin/sh node"
fi

layout=$B/image-oci
if [[ ! -f $layout/index.json || -n ${BENCH_REBUILD:-} ]]; then
	echo "build-image: writing the OCI layout $layout"
	mkimage=${MKIMAGE:-}
	if [[ -z $mkimage ]]; then
		mkimage=$(mktemp -d)/mkimage
		(cd "$here/.." && go build -o "$mkimage" ./bench/mkimage)
	fi
	# /dev, /proc, /sys stay empty as in a docker-built image; apt's caches are cleaned as a
	# Dockerfile would (.deb files are incompressible and would make gunzip look cheap).
	"$mkimage" -o "$layout" \
		-exclude 'dev/*,proc/*,sys/*,var/cache/apt/archives/*.deb,var/cache/apt/*.bin' \
		"$B/base" "$B/l2" "$B/l3" "$B/l4" | tee "$B/image-oci.summary"
else
	cat "$B/image-oci.summary"
fi

# A second image sharing the first three layers, with a small app layer of its own on top:
# pulling it after the first should cost its new layer only.
if [[ ! -d $B/l5/app ]]; then
	rm -rf "$B/l5"
	mkdir -p "$B/l5/app"
	printf 'require("http").createServer((q, s) => s.end("hello\\n")).listen(8080);\n' >"$B/l5/app/server.js"
	echo '{"name": "app", "version": "1.0.0", "main": "server.js"}' >"$B/l5/app/package.json"
	touch -d 2024-01-01T00:00:00Z "$B/l5/app/server.js" "$B/l5/app/package.json" "$B/l5/app" "$B/l5"
fi
layout2=$B/image2-oci
if [[ ! -f $layout2/index.json || -n ${BENCH_REBUILD:-} ]]; then
	echo "build-image: writing the second OCI layout $layout2"
	mkimage=${mkimage:-${MKIMAGE:-}}
	if [[ -z $mkimage ]]; then
		mkimage=$(mktemp -d)/mkimage
		(cd "$here/.." && go build -o "$mkimage" ./bench/mkimage)
	fi
	"$mkimage" -o "$layout2" -ref bench/node-app:latest \
		-exclude 'dev/*,proc/*,sys/*,var/cache/apt/archives/*.deb,var/cache/apt/*.bin' \
		"$B/base" "$B/l2" "$B/l3" "$B/l5" | tee "$B/image2-oci.summary"
else
	cat "$B/image2-oci.summary"
fi
