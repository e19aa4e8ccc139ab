package run

import (
	"fmt"
	"math"
	"strconv"
)

// setting is one write of a limit into a cgroup control file. The formatting is kept apart from the
// writing so that it can be checked on its own for both versions on any host.
type setting struct {
	ctrl     string // controller the file belongs to, named in ErrControllerMissing
	file     string
	val      string
	optional bool // skipped when the file does not exist (memsw without swap accounting, swap.max)
}

// cfsPeriod is the CFS period used for --cpus, as docker uses (100 ms).
const cfsPeriod = 100000

// cpuQuota converts --cpus to a CFS quota in microseconds per cfsPeriod.
func cpuQuota(cpus float64) int64 { return int64(math.Round(cpus * cfsPeriod)) }

// sharesToWeight converts docker's cpu-shares (2..262144) to cgroup v2 cpu.weight (1..10000) with
// the formula runc and crun use, so the same flag means the same thing on both versions.
func sharesToWeight(shares uint64) uint64 {
	if shares == 0 {
		return 0
	}
	return 1 + ((shares-2)*9999)/262142
}

// runDevice is a character device the run's /dev provides; minor -1 means any minor.
type runDevice struct {
	major uint32
	minor int64
}

// runDevices are the only devices a run may open or mknod (read, write, mknod): the nodes of the
// tmpfs /dev the launcher builds. Both the v1 devices cgroup and the v2 eBPF filter use this list.
var runDevices = []runDevice{
	{1, 3}, {1, 5}, {1, 7}, {1, 8}, {1, 9}, // null, zero, full, random, urandom
	{5, 0}, {5, 2}, // tty, ptmx
	{136, -1}, // pts/N
}

// v1DeviceRules deny every device, removing what a new cgroup inherits from its parent, then allow
// runDevices. Each rule is its own write.
func v1DeviceRules() []setting {
	s := []setting{{ctrl: "devices", file: "devices.deny", val: "a"}}
	for _, d := range runDevices {
		minor := "*"
		if d.minor >= 0 {
			minor = strconv.FormatInt(d.minor, 10)
		}
		s = append(s, setting{ctrl: "devices", file: "devices.allow", val: fmt.Sprintf("c %d:%s rwm", d.major, minor)})
	}
	return s
}

// v1Settings lists the v1 writes for l, in the order they must happen (period before quota,
// memory limit before memsw limit).
func v1Settings(l Limits) []setting {
	var s []setting
	if l.MemoryBytes > 0 {
		v := strconv.FormatInt(l.MemoryBytes, 10)
		s = append(s,
			setting{ctrl: "memory", file: "memory.limit_in_bytes", val: v},
			setting{ctrl: "memory", file: "memory.memsw.limit_in_bytes", val: v, optional: true})
	}
	if l.CPUs > 0 {
		s = append(s,
			setting{ctrl: "cpu", file: "cpu.cfs_period_us", val: strconv.Itoa(cfsPeriod)},
			setting{ctrl: "cpu", file: "cpu.cfs_quota_us", val: strconv.FormatInt(cpuQuota(l.CPUs), 10)})
	}
	if l.CPUShares > 0 {
		s = append(s, setting{ctrl: "cpu", file: "cpu.shares", val: strconv.FormatUint(l.CPUShares, 10)})
	}
	if l.PidsLimit > 0 {
		s = append(s, setting{ctrl: "pids", file: "pids.max", val: strconv.FormatInt(l.PidsLimit, 10)})
	}
	for _, d := range l.DeviceReadBps {
		s = append(s, setting{ctrl: "blkio", file: "blkio.throttle.read_bps_device",
			val: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, d.BytesPerSec)})
	}
	for _, d := range l.DeviceWriteBps {
		s = append(s, setting{ctrl: "blkio", file: "blkio.throttle.write_bps_device",
			val: fmt.Sprintf("%d:%d %d", d.Major, d.Minor, d.BytesPerSec)})
	}
	return s
}

// v2Settings lists the cgroup v2 writes for l. Swap is turned off so --memory is the whole limit,
// as with v1 memsw. io.max gets one line per device carrying both directions.
func v2Settings(l Limits) []setting {
	var s []setting
	if l.MemoryBytes > 0 {
		s = append(s,
			setting{ctrl: "memory", file: "memory.max", val: strconv.FormatInt(l.MemoryBytes, 10)},
			setting{ctrl: "memory", file: "memory.swap.max", val: "0", optional: true})
	}
	if l.CPUs > 0 {
		s = append(s, setting{ctrl: "cpu", file: "cpu.max", val: fmt.Sprintf("%d %d", cpuQuota(l.CPUs), cfsPeriod)})
	}
	if l.CPUShares > 0 {
		s = append(s, setting{ctrl: "cpu", file: "cpu.weight", val: strconv.FormatUint(sharesToWeight(l.CPUShares), 10)})
	}
	if l.PidsLimit > 0 {
		s = append(s, setting{ctrl: "pids", file: "pids.max", val: strconv.FormatInt(l.PidsLimit, 10)})
	}
	type dev struct{ major, minor uint32 }
	var order []dev
	rates := map[dev]string{}
	add := func(rs []DeviceRate, key string) {
		for _, r := range rs {
			d := dev{r.Major, r.Minor}
			if _, ok := rates[d]; !ok {
				order = append(order, d)
			}
			rates[d] += fmt.Sprintf(" %s=%d", key, r.BytesPerSec)
		}
	}
	add(l.DeviceReadBps, "rbps")
	add(l.DeviceWriteBps, "wbps")
	for _, d := range order {
		s = append(s, setting{ctrl: "io", file: "io.max", val: fmt.Sprintf("%d:%d%s", d.major, d.minor, rates[d])})
	}
	return s
}

// controllersOf lists the distinct controllers settings need, in first-use order.
func controllersOf(s []setting) []string {
	var out []string
	for _, x := range s {
		dup := false
		for _, c := range out {
			dup = dup || c == x.ctrl
		}
		if !dup {
			out = append(out, x.ctrl)
		}
	}
	return out
}
