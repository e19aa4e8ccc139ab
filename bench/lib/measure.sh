# bench/lib/measure.sh: timing runs, warm start, and the table. Sourced by bench/run.sh.

RESULTS=$W/results.tsv # key, label, wall times, cpu times, peak RSS KiB (comma lists), status
: >"$RESULTS"
export W BIN REF PORT CRANE

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# daemon_hwm PID: the daemon's peak RSS in KiB since the last reset (echo 5 > clear_refs).
# daemon_cpu PID: user+system CPU seconds the daemon has used so far.
daemon_cpu() {
	awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

daemon_hwm() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }

# measure KEY LABEL PREP CMD CHECK [warm]: RUNS timed runs of CMD (a bash -c string), each
# after PREP and, unless "warm", a dropped page cache. CHECK must pass after each run. The
# peak RSS is the largest process of CMD's tree (/usr/bin/time %M) or, when DAEMON_PID is
# set, the daemon's if larger: for ctr and docker the work happens in the daemon, whose CPU
# time is added to the client's.
measure() {
	local key=$1 label=$2 prep=$3 cmd=$4 check=$5 mode=${6:-cold}
	local times=() cpus=() rss=() status=ok i rc t0 t1 m u s hwm
	export W BIN REF PORT CRANE
	for ((i = 1; i <= RUNS; i++)); do
		eval "$prep" >/dev/null 2>&1
		[[ $mode == warm ]] || drop_caches
		local dcpu0=0
		if [[ -n ${DAEMON_PID:-} ]]; then
			echo 5 >"/proc/$DAEMON_PID/clear_refs"
			dcpu0=$(daemon_cpu "$DAEMON_PID")
		fi
		log "$key run $i/$RUNS"
		t0=$(date +%s.%N)
		/usr/bin/time -f '%M %U %S' -o "$W/time.out" timeout "$TIMEOUT" bash -c "$cmd" >"$W/$key.out" 2>&1
		rc=$?
		t1=$(date +%s.%N)
		if [[ $rc -ne 0 ]] || ! (eval "$check") >/dev/null 2>&1; then
			status="failed (exit $rc): $(grep -v '^Command' "$W/$key.out" "$W/time.out" 2>/dev/null | tail -2 | cut -c1-160 | tr '\n\t' '  ')"
			[[ $rc -eq 124 ]] && status="timed out after ${TIMEOUT}s"
			note "$key run $i: $status"
			break
		fi
		read -r m u s <"$W/time.out"
		if [[ -n ${DAEMON_PID:-} ]]; then
			hwm=$(daemon_hwm "$DAEMON_PID")
			((hwm > m)) && m=$hwm
			u=$(awk -v a="$u" -v b="$(daemon_cpu "$DAEMON_PID")" -v c="$dcpu0" 'BEGIN { print a + b - c }')
		fi
		times+=("$(awk -v a="$t1" -v b="$t0" 'BEGIN { printf "%.3f", a - b }')")
		cpus+=("$(awk -v a="$u" -v b="$s" 'BEGIN { printf "%.2f", a + b }')")
		rss+=("$m")
	done
	local IFS=,
	printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$key" "$label" "${times[*]}" "${cpus[*]}" "${rss[*]}" "$status" >>"$RESULTS"
}

# warm_start: `imgrun run IMAGE true` with the image cached, against bwrap, unshare+chroot and
# docker run on the same image (hyperfine).
warm_start() {
	local root=$W/imgrun-root rootfs=$W/imgrun-rootfs
	log "warm start: preparing imgrun's cache"
	if ! "$BIN/imgrun" -q --root "$root" --insecure "127.0.0.1:$PORT" run "$REF" true >"$W/warm.out" 2>&1; then
		note "imgrun run failed: $(tail -1 "$W/warm.out" | cut -c1-160)"
	fi
	[[ -x $rootfs/usr/bin/true ]] || rootfs=$W/crane-rootfs
	local cmds=() names=()
	if "$BIN/imgrun" -q --root "$root" run "$REF" true >/dev/null 2>&1; then
		names+=(imgrun-run) cmds+=("$BIN/imgrun --root $root run $REF true")
	fi
	if [[ -x $rootfs/usr/bin/true ]]; then
		command -v bwrap >/dev/null &&
			names+=(bwrap) cmds+=("bwrap --bind $rootfs / --proc /proc --dev /dev --unshare-all true")
		names+=(unshare-chroot) cmds+=("unshare -fmuipn chroot $rootfs true")
	else
		note "warm start: no unpacked rootfs for bwrap/chroot"
	fi
	if [[ -n $DOCKERD_PID ]] && docker_cmd image inspect "$REF" >/dev/null 2>&1 &&
		docker_cmd run --rm --network none "$REF" true >/dev/null 2>&1; then
		names+=(docker-run) cmds+=("/usr/bin/docker -H unix://$W/docker.sock run --rm --network none $REF true")
	elif [[ -n $DOCKERD_PID ]]; then
		note "docker run failed: $(docker_cmd run --rm --network none "$REF" true 2>&1 | tail -1 | cut -c1-160)"
	fi
	local i
	for i in "${!names[@]}"; do
		log "warm start: ${names[$i]}"
		local runs=20
		[[ ${names[$i]} == docker-run ]] && runs=10
		if hyperfine -N --warmup 3 --runs "$runs" --export-json "$W/hf-${names[$i]}.json" "${cmds[$i]}" >/dev/null 2>"$W/hf.err"; then
			python3 - "$W/hf-${names[$i]}.json" "${names[$i]}" "${cmds[$i]}" >>"$RESULTS" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))["results"][0]
t = ",".join("%.4f" % x for x in r["times"])
words = sys.argv[3].split()
label = " ".join([words[0].split("/")[-1]] + [w if "/" not in w or w == "/" else "…/" + w.split("/")[-1] for w in words[1:]])
print("warm-%s\twarm: %s\t%s\t\t\tok" % (sys.argv[2], label, t))
EOF
		else
			note "warm start ${names[$i]}: hyperfine failed: $(tail -1 "$W/hf.err")"
		fi
	done
}

print_table() {
	python3 - "$RESULTS" "$RUNS" "$IMAGE_SUMMARY" "$(nproc)" "$(uname -r)" "$(hostname)" "${NOTES[@]}" <<'EOF'
import statistics, sys, datetime
path, runs, summary, ncpu, kernel, host = sys.argv[1:7]
notes = sys.argv[7:]
rows = {}
order = []
for line in open(path):
    key, label, times, cpus, rss, status = line.rstrip("\n").split("\t")
    f = lambda s: [float(x) for x in s.split(",") if x]
    rows[key] = dict(label=label, t=f(times), cpu=f(cpus), rss=f(rss), status=status)
    order.append(key)

def med(k):
    r = rows.get(k)
    return statistics.median(r["t"]) if r and r["t"] else None

def fmt(x, p=2):
    return "-" if x is None else "%.*f" % (p, x)

out = []
out.append("## imgrun benchmark, %s" % datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))
out.append("")
out.append("Machine: %s, %s cores, Linux %s. Image: %s." % (host, ncpu, kernel, summary.replace("image ", "", 1)))
out.append("Registry: Debian's docker-registry on 127.0.0.1. %s run(s) per tool; page cache dropped and the tool's store cleared before each cold run." % runs)
out.append("")
im = med("imgrun")
cold = [k for k in order if k in ("imgrun", "imgrun-run1", "crane", "umoci", "ctr", "podman", "docker")]
out.append("### Cold pull + unpack into a usable rootfs")
out.append("")
out.append("| tool | median s | min s | tool / imgrun | CPU s (median) | peak RSS MiB | status |")
out.append("|---|---:|---:|---:|---:|---:|---|")
def row(k, base):
    r = rows[k]
    m = med(k)
    ratio = "%.2fx" % (m / base) if m and base else "-"
    cpu = fmt(statistics.median(r["cpu"])) if r["cpu"] else "-"
    rss = fmt(max(r["rss"]) / 1024, 0) if r["rss"] else "-"
    p = 3 if k.startswith("warm-") else 2
    st = r["status"] if r["status"] != "ok" else "ok (%d runs)" % len(r["t"])
    if r["status"] == "ok" and len(r["t"]) <= 5:
        st = "ok: " + ", ".join(fmt(x, p) for x in r["t"])
    out.append("| %s | %s | %s | %s | %s | %s | %s |" % (r["label"], fmt(m, p), fmt(min(r["t"]), p) if r["t"] else "-", ratio, cpu, rss, st))
for k in cold:
    row(k, im)
out.append("")
out.append("### Baseline, export, warm start")
out.append("")
out.append("| measurement | median s | min s | ratio | CPU s (median) | peak RSS MiB | status |")
out.append("|---|---:|---:|---:|---:|---:|---|")
others = [k for k in order if k not in cold and not k.startswith("net-")]
for k in others:
    base = {"gunzip": im, "imgrun-export": med("crane-export"), "crane-export": med("imgrun-export"),
            "imgrun-second": med("imgrun-run1")}.get(k)
    if k.startswith("warm-"):
        base = med("warm-bwrap")
    row(k, base)
out.append("")
net = [k for k in order if k.startswith("net-")]
if net:
    out.append("### Cold, over a network link (throttling proxy in front of the registry)")
    out.append("")
    out.append("| tool | median s | min s | tool / download alone | CPU s (median) | peak RSS MiB | status |")
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for k in net:
        row(k, med("net-imgrun-pull"))
out.append("")
out.append("Ratios: cold rows (including imgrun's first run, which builds layer snapshots composed by overlayfs like ctr, podman and docker) are tool / imgrun unpack (a flat directory); gunzip is relative to imgrun unpack, the second image to imgrun run (cold); the export rows are each other's inverse; warm rows are relative to bwrap.")
out.append("")

def goal(text, ok, detail):
    state = "n/a" if ok is None else ("met" if ok else "NOT met")
    out.append("| %s | %s | %s |" % (text, state, detail))

out.append("### Goals (issue 4)")
out.append("")
out.append("| goal | state | measured |")
out.append("|---|---|---|")
peers = [(med(k), rows[k]["label"]) for k in cold if not k.startswith("imgrun") and med(k)]
fastest = min(peers) if peers else None
g = med("gunzip")
for key, what in (("imgrun", "cold unpack (flat dir)"), ("imgrun-run1", "cold first run (snapshots)")):
    t = med(key)
    if t and fastest:
        goal(what + " <= 1/3 of the fastest peer", t <= fastest[0] / 3, "imgrun %.2f s vs %s %.2f s (%.2fx)" % (t, fastest[1], fastest[0], fastest[0] / t))
    else:
        goal(what + " <= 1/3 of the fastest peer", None, "not measured")
    if t and g:
        goal(what + " <= 1.25x one-core gunzip", t <= 1.25 * g, "imgrun %.2f s = %.2fx gunzip %.2f s" % (t, t / g, g))
    else:
        goal(what + " <= 1.25x one-core gunzip", None, "not measured")
ie, ce = med("imgrun-export"), med("crane-export")
if ie and ce:
    goal("export >= 2x faster than crane export", ce >= 2 * ie, "imgrun %.2f s vs crane %.2f s (%.2fx)" % (ie, ce, ce / ie))
else:
    goal("export >= 2x faster than crane export", None, "not measured")
for key, what in (("imgrun", "cold unpack"), ("imgrun-run1", "cold first run")):
    r = rows.get(key)
    if r and r["rss"]:
        goal("peak RSS of %s <= 64 MiB" % what, max(r["rss"]) / 1024 <= 64, "%.0f MiB" % (max(r["rss"]) / 1024))
    else:
        goal("peak RSS of %s <= 64 MiB" % what, None, "not measured")
wi, wb, wd = med("warm-imgrun-run"), med("warm-bwrap"), med("warm-docker-run")
goal("warm start <= 1.5x bwrap", (wi <= 1.5 * wb) if wi and wb else None,
     "imgrun %s s vs bwrap %s s" % (fmt(wi, 3), fmt(wb, 3)) if wi and wb else "not measured")
goal("warm start >= 10x faster than docker run", (wd >= 10 * wi) if wi and wd else None,
     "imgrun %s s vs docker run %s s" % (fmt(wi, 3), fmt(wd, 3)) if wi and wd else "not measured")
i1, i2 = med("imgrun-run1"), med("imgrun-second")
goal("second image sharing base layers costs its new layers only (here: <= 1/4 of a cold first run)",
     (i2 <= i1 / 4) if i1 and i2 else None,
     "second image %s s vs cold first run %s s" % (fmt(i2), fmt(i1)) if i1 and i2 else "not measured")
if notes:
    out.append("")
    out.append("Notes:")
    for n in notes:
        out.append("- " + n)
print("\n".join(out))
EOF
}
