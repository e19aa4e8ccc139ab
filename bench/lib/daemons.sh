# bench/lib/daemons.sh: the registry and the peers' daemons, each with its own state under $W,
# and their cleanup. Sourced by bench/run.sh.

REGISTRY_PID= CONTAINERD_PID= DOCKERD_PID=

# stop_pid PID: SIGTERM, up to 20 s of grace, then SIGKILL.
stop_pid() {
	local pid=$1 i
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
	kill -TERM "$pid" 2>/dev/null
	for ((i = 0; i < 40; i++)); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.5
	done
	kill -KILL "$pid" 2>/dev/null
	wait "$pid" 2>/dev/null
	return 0
}

# wait_for SECONDS CMD...: polls CMD every 0.2 s until it succeeds.
wait_for() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || return 1
		sleep 0.2
	done
}

cleanup() {
	trap - EXIT INT TERM
	log "cleaning up"
	[[ -n $DOCKERD_PID ]] && stop_pid "$DOCKERD_PID"
	[[ -n $CONTAINERD_PID ]] && stop_pid "$CONTAINERD_PID"
	[[ -n $REGISTRY_PID ]] && stop_pid "$REGISTRY_PID"
	[[ -n ${THROTTLE_PID:-} ]] && stop_pid "$THROTTLE_PID"
	# Whatever the peers left mounted below $W (overlay snapshots, podman's shm, netns
	# files), deepest first.
	local m
	for m in $(awk -v w="$W" 'index($2, w) == 1 { print $2 }' /proc/self/mounts | sort -r); do
		umount -l "$m" 2>/dev/null
	done
	if [[ -n ${BENCH_KEEP:-} ]]; then
		log "kept $W"
	else
		rm -rf "$W"
	fi
}

free_port() {
	python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

registry_up() { python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$PORT/v2/', timeout=2)"; }

# start_registry: Debian's distribution registry on 127.0.0.1:$PORT, storage in $W/registry.
start_registry() {
	PORT=$(free_port)
	mkdir -p "$W/registry"
	cat >"$W/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $W/registry
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$PORT
EOF
	docker-registry serve "$W/registry.yml" >"$W/registry.log" 2>&1 &
	REGISTRY_PID=$!
	wait_for 30 registry_up
}

# start_containerd: a containerd of its own (root, state, socket under $W; CRI off).
start_containerd() {
	mkdir -p "$W/containerd"
	cat >"$W/containerd.toml" <<EOF
version = 2
root = "$W/containerd/root"
state = "$W/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$W/containerd.sock"
[ttrpc]
  address = "$W/containerd.sock.ttrpc"
EOF
	containerd --config "$W/containerd.toml" >"$W/containerd.log" 2>&1 &
	CONTAINERD_PID=$!
	wait_for 30 ctr -a "$W/containerd.sock" version
}
ctr_cmd() { ctr -a "$W/containerd.sock" -n bench "$@"; }
ctr_clear() {
	ctr_cmd images rm --sync "$REF" >/dev/null 2>&1
	ctr_cmd content prune references >/dev/null 2>&1
	local left
	left=$(ctr_cmd snapshots ls -q 2>/dev/null | wc -l)
	[[ $left -eq 0 ]] || log "ctr: $left snapshots left after clearing"
	return 0
}
ctr_check() { [[ $(ctr_cmd snapshots ls -q | wc -l) -ge 1 ]] && ctr_cmd images check | grep -q complete; }

# podman is daemonless: its storage root and run root live under $W.
podman_cmd() {
	podman --root "$W/podman/root" --runroot "$W/podman/run" --storage-driver overlay \
		--runtime runc --cgroup-manager cgroupfs --events-backend file --tmpdir "$W/podman/tmp" "$@"
}
podman_clear() { podman_cmd rmi -af >/dev/null 2>&1; true; }

# start_dockerd: Debian's dockerd with its own data root, exec root, socket and pidfile; no
# iptables, no bridge (the machine allows neither).
start_dockerd() {
	mkdir -p "$W/docker" "$W/docker-exec"
	echo '{}' >"$W/daemon.json"
	dockerd --config-file "$W/daemon.json" --iptables=false --ip-masq=false --bridge=none \
		--data-root "$W/docker" --exec-root "$W/docker-exec" --pidfile "$W/docker.pid" \
		-H "unix://$W/docker.sock" --storage-driver overlay2 --log-level warn >"$W/dockerd.log" 2>&1 &
	DOCKERD_PID=$!
	wait_for 60 docker_cmd version
}
# Debian's client, of the daemon's version (a newer docker may be first on PATH).
docker_cmd() { /usr/bin/docker -H "unix://$W/docker.sock" "$@"; }

export -f ctr_cmd podman_cmd docker_cmd
