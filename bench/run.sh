#!/usr/bin/env bash
# bench/run.sh: cold pull+unpack of a realistic image from a registry on 127.0.0.1 by imgrun
# and by its peers (crane, skopeo+umoci, containerd's ctr, podman, docker), all in one run,
# printed as one markdown table and saved to bench/results/<date>.md. See bench/README.md.
#
#   sudo bench/run.sh [-n RUNS] [-t "imgrun crane umoci ctr podman docker"] [-T TIMEOUT_S]
#
# Every peer is optional: one that fails to install, start or pull is skipped with a note.
# Between runs each tool's store is cleared and the page cache dropped. Daemons, mounts and
# temp dirs are cleaned up on exit.
set -uo pipefail
{ # the whole script is parsed before it runs, so editing it during a run is harmless

RUNS=${BENCH_RUNS:-3}
NET_RATE=${BENCH_NET_RATE:-50e6} # bytes/s of the "network" section (0: skip it)
TOOLS=${BENCH_TOOLS:-"imgrun crane umoci ctr podman docker"}
TIMEOUT=${BENCH_TIMEOUT:-600}
WARM=${BENCH_WARM:-1}
while getopts "n:t:T:W" opt; do
	case $opt in
	n) RUNS=$OPTARG ;;
	t) TOOLS=$OPTARG ;;
	T) TIMEOUT=$OPTARG ;;
	W) WARM= ;;
	*) sed -n '2,9p' "$0"; exit 2 ;;
	esac
done
[[ $(id -u) -eq 0 ]] || { echo "bench: run as root (drops caches, mounts, starts daemons)" >&2; exit 1; }

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
W=$(mktemp -d /var/tmp/imgrun-bench.XXXXXX)
BIN=$W/bin
mkdir -p "$BIN" "$here/results"
NOTES=() # lines printed under the table
note() { NOTES+=("$*"); echo "bench: $*" >&2; }
log() { echo "bench: $*" >&2; }

source "$here/lib/daemons.sh"
source "$here/lib/measure.sh"
trap cleanup EXIT INT TERM

# --- the image -----------------------------------------------------------------------------
"$here/build-image.sh" >&2 || { echo "bench: building the test image failed" >&2; exit 1; }
LAYOUT=${BENCH_CACHE:-/var/cache/imgrun-bench}/image-oci
LAYOUT2=${BENCH_CACHE:-/var/cache/imgrun-bench}/image2-oci
IMAGE_SUMMARY=$(tail -1 "${LAYOUT}.summary")

# --- tools ---------------------------------------------------------------------------------
apt_ensure() { # apt_ensure CMD PACKAGE: installs PACKAGE when CMD is missing; false if it cannot
	command -v "$1" >/dev/null 2>&1 && return 0
	log "installing $2"
	[[ -n ${APT_UPDATED:-} ]] || { apt-get update -q >/dev/null 2>&1; APT_UPDATED=1; }
	DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y -q --no-install-recommends "$2" </dev/null >"$W/apt-$2.log" 2>&1
	command -v "$1" >/dev/null 2>&1
}
apt_ensure /usr/bin/time time || { echo "bench: need /usr/bin/time" >&2; exit 1; }
apt_ensure docker-registry docker-registry || { echo "bench: need Debian's docker-registry" >&2; exit 1; }
apt_ensure hyperfine hyperfine || note "hyperfine missing: no warm-start numbers"
apt_ensure bwrap bubblewrap || note "bwrap missing"
apt_ensure python3 python3-minimal || { echo "bench: need python3 (port, json)" >&2; exit 1; }

log "building imgrun, gunzip"
(cd "$repo" && go build -o "$BIN/imgrun" ./cmd/imgrun && go build -o "$BIN/gunzip" ./bench/gunzip &&
	go build -o "$BIN/throttle" ./bench/throttle) ||
	{ echo "bench: go build failed" >&2; exit 1; }
CRANE=$(command -v crane || echo "$(go env GOPATH)/bin/crane")
if [[ ! -x $CRANE ]]; then
	log "installing crane from the Go module proxy"
	GOFLAGS= GOBIN=$BIN timeout 600 go install github.com/google/go-containerregistry/cmd/crane@v0.22.1 >"$W/crane.log" 2>&1
	CRANE=$BIN/crane
fi
[[ -x $CRANE ]] || note "crane: go install failed"

# --- the registry --------------------------------------------------------------------------
start_registry || { echo "bench: the registry did not start" >&2; exit 1; }
REF=127.0.0.1:$PORT/bench/node:latest
REF2=127.0.0.1:$PORT/bench/node-app:latest
export REF2
push() { # push LAYOUT NAME REF
	log "pushing $1 to $3"
	if [[ -x $CRANE ]]; then
		timeout 600 "$CRANE" push --insecure "$1" "$3" >>"$W/push.log" 2>&1
	else
		apt_ensure skopeo skopeo && timeout 600 skopeo copy --dest-tls-verify=false "oci:$1:$2" "docker://$3" >>"$W/push.log" 2>&1
	fi || { cat "$W/push.log" >&2; echo "bench: push failed" >&2; exit 1; }
}
push "$LAYOUT" bench/node:latest "$REF"
push "$LAYOUT2" bench/node-app:latest "$REF2"

# --- cold pull + unpack --------------------------------------------------------------------
for tool in $TOOLS; do
	case $tool in
	imgrun)
		measure imgrun "imgrun unpack" \
			'rm -rf "$W/imgrun-root" "$W/imgrun-rootfs"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$PORT" unpack "$REF" "$W/imgrun-rootfs"' \
			'test -x "$W/imgrun-rootfs/usr/bin/node"'
		measure imgrun-run1 "imgrun run IMAGE true (cold: first run)" \
			'rm -rf "$W/imgrun-root"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$PORT" run "$REF" true' \
			'true'
		# The second image shares its first three layers (all but ~0.1 MB) with the first,
		# which is pulled and run (untimed) before each run.
		measure imgrun-second "imgrun run IMAGE2 true (shares 3 of 4 layers with a cached image)" \
			'rm -rf "$W/imgrun-root" "$W/prep-ok"; "$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$PORT" run "$REF" true && touch "$W/prep-ok"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$PORT" run "$REF2" true' \
			'test -e "$W/prep-ok"'
		;;
	crane)
		[[ -x $CRANE ]] || continue
		measure crane "crane export \| tar -x" \
			'rm -rf "$W/crane-rootfs"; mkdir "$W/crane-rootfs"' \
			'"$CRANE" export --insecure "$REF" - | tar -xf - -C "$W/crane-rootfs"' \
			'test -x "$W/crane-rootfs/usr/bin/node"'
		;;
	umoci)
		if ! apt_ensure skopeo skopeo; then note "skopeo: not installable"; continue; fi
		if ! command -v umoci >/dev/null && ! UMOCI_DIR=$BIN bash "$repo/scripts/install-umoci.sh" >&2; then
			note "umoci: build failed"; continue
		fi
		PATH=$PATH:$BIN
		measure umoci "skopeo copy + umoci unpack" \
			'rm -rf "$W/umoci-layout" "$W/umoci-bundle"' \
			'skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$W/umoci-layout:bench" && umoci unpack --image "$W/umoci-layout:bench" "$W/umoci-bundle"' \
			'test -x "$W/umoci-bundle/rootfs/usr/bin/node"'
		;;
	ctr)
		if ! apt_ensure containerd containerd; then note "containerd: not installable"; continue; fi
		if ! start_containerd; then note "containerd: did not start (see $W/containerd.log)"; continue; fi
		DAEMON_PID=$CONTAINERD_PID measure ctr "ctr images pull (overlayfs)" \
			'ctr_clear' \
			'ctr -a "$W/containerd.sock" -n bench images pull --plain-http "$REF" >/dev/null' \
			'ctr_check'
		stop_pid "$CONTAINERD_PID"; CONTAINERD_PID=
		;;
	podman)
		if ! apt_ensure podman podman; then note "podman: not installable"; continue; fi
		measure podman "podman pull (overlay)" \
			'podman_clear' \
			'podman_cmd pull -q --tls-verify=false "$REF" >/dev/null' \
			'podman_cmd image exists "$REF"'
		;;
	docker)
		if ! apt_ensure dockerd docker.io; then note "docker: not installable"; continue; fi
		if ! start_dockerd; then note "dockerd: did not start (see $W/dockerd.log)"; continue; fi
		DAEMON_PID=$DOCKERD_PID measure docker "docker pull (overlay2)" \
			'docker_cmd rmi -f "$REF" >/dev/null 2>&1; docker_cmd image prune -af >/dev/null 2>&1; true' \
			'docker_cmd pull -q "$REF" >/dev/null' \
			'docker_cmd image inspect "$REF" >/dev/null'
		;;
	*) note "unknown tool $tool" ;;
	esac
done

# --- the baselines -------------------------------------------------------------------------
LAYERS=$(python3 - "$LAYOUT" <<'EOF'
import json, sys
root = sys.argv[1]
idx = json.load(open(root + "/index.json"))
m = json.load(open(root + "/blobs/" + idx["manifests"][0]["digest"].replace(":", "/")))
print(" ".join(root + "/blobs/" + l["digest"].replace(":", "/") for l in m["layers"]))
EOF
)
export LAYERS
# The page cache holds the blobs here (cat first): this is the CPU cost of gunzip alone.
measure gunzip "gunzip all layers, 1 core (klauspost)" \
	'cat $LAYERS >/dev/null' \
	'GOMAXPROCS=1 "$BIN/gunzip" $LAYERS' \
	'grep -q " bytes out" "$W/gunzip.out"' warm

# --- export --------------------------------------------------------------------------------
if [[ " $TOOLS " == *" imgrun "* ]]; then
	measure imgrun-export "imgrun export (cold: pull + export)" \
		'rm -rf "$W/imgrun-root" "$W/export.tar"' \
		'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$PORT" export "$REF" -o "$W/export.tar"' \
		'test -s "$W/export.tar"'
	if [[ -x $CRANE ]]; then
		measure crane-export "crane export (to a file)" \
			'rm -f "$W/export.tar"' \
			'"$CRANE" export --insecure "$REF" "$W/export.tar"' \
			'test -s "$W/export.tar"'
	fi
	rm -f "$W/export.tar"
fi

# --- warm start ----------------------------------------------------------------------------
if [[ -n $WARM ]] && command -v hyperfine >/dev/null; then
	warm_start
fi

# --- over a network link --------------------------------------------------------------------
# (After the warm start, which uses the trees the cold runs left.) The same cold pulls through a proxy that lets $NET_RATE bytes/s through (bench/throttle):
# on a link slower than unpacking, a tool that unpacks while it downloads finishes with the
# download; the pull alone is the floor.
if [[ $NET_RATE != 0 ]]; then
	NPORT=$(free_port)
	"$BIN/throttle" -listen "127.0.0.1:$NPORT" -target "127.0.0.1:$PORT" -rate "$NET_RATE" >"$W/throttle.log" 2>&1 &
	THROTTLE_PID=$!
	NREF=127.0.0.1:$NPORT/bench/node:latest
	export NPORT NREF
	sleep 0.5
	RATE_MB=$(python3 -c "print('%g' % ($NET_RATE / 1e6))")
	if [[ " $TOOLS " == *" imgrun "* ]]; then
		measure net-imgrun-pull "net ${RATE_MB} MB/s: imgrun pull (the download alone)" \
			'rm -rf "$W/imgrun-root"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$NPORT" pull "$NREF" >/dev/null' \
			'true'
		measure net-imgrun-run1 "net ${RATE_MB} MB/s: imgrun run IMAGE true (cold)" \
			'rm -rf "$W/imgrun-root"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$NPORT" run "$NREF" true' \
			'true'
		measure net-imgrun "net ${RATE_MB} MB/s: imgrun unpack" \
			'rm -rf "$W/imgrun-root" "$W/imgrun-rootfs"' \
			'"$BIN/imgrun" -q --root "$W/imgrun-root" --insecure "127.0.0.1:$NPORT" unpack "$NREF" "$W/imgrun-rootfs"' \
			'test -x "$W/imgrun-rootfs/usr/bin/node"'
	fi
	if [[ " $TOOLS " == *" crane "* && -x $CRANE ]]; then
		measure net-crane "net ${RATE_MB} MB/s: crane export \| tar -x" \
			'rm -rf "$W/crane-rootfs"; mkdir "$W/crane-rootfs"' \
			'"$CRANE" export --insecure "$NREF" - | tar -xf - -C "$W/crane-rootfs"' \
			'test -x "$W/crane-rootfs/usr/bin/node"'
	fi
	stop_pid "$THROTTLE_PID"; THROTTLE_PID=
	rm -rf "$W/crane-rootfs" "$W/imgrun-root" "$W/imgrun-rootfs"
fi

out=$here/results/$(date -u +%F).md
[[ ! -e $out ]] || out=$here/results/$(date -u +%F-%H%M).md
print_table | tee "$out"
exit
}
