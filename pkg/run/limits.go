package run

import "slices"

// Limits are the resource limits of one run, spelled as docker's flags are. A zero field means
// "no limit". They are applied through a cgroup per run (cgroup v2 or v1, chosen at runtime).
type Limits struct {
	// MemoryBytes is --memory: the hard memory limit; exceeding it OOM-kills the run.
	MemoryBytes int64
	// CPUs is --cpus: the CPU quota in cores (0.5 = half a core).
	CPUs float64
	// CPUShares is --cpu-shares: a relative weight (docker's scale, 2..262144, default 1024);
	// cpu.shares on cgroup v1, converted to cpu.weight on v2.
	CPUShares uint64
	// PidsLimit is --pids-limit: the most processes the run may have at once.
	PidsLimit int64
	// DeviceReadBps and DeviceWriteBps are --device-read-bps and --device-write-bps
	// (blkio.throttle on v1, io.max on v2).
	DeviceReadBps  []DeviceRate
	DeviceWriteBps []DeviceRate
}

// equal reports whether l and o are the same limits (a nil and an empty list are the same).
func (l Limits) equal(o Limits) bool {
	return l.MemoryBytes == o.MemoryBytes && l.CPUs == o.CPUs && l.CPUShares == o.CPUShares &&
		l.PidsLimit == o.PidsLimit && slices.Equal(l.DeviceReadBps, o.DeviceReadBps) &&
		slices.Equal(l.DeviceWriteBps, o.DeviceWriteBps)
}

// DeviceRate is a per-device I/O rate limit such as "/dev/sda:1mb".
type DeviceRate struct {
	Path         string // the host device node, e.g. /dev/vda
	Major, Minor uint32 // resolved from Path
	BytesPerSec  uint64
}

// Stats is what a run's cgroup reports when it ends (--stats).
type Stats struct {
	MemoryPeakBytes uint64 // peak memory usage
	CPUUserNanos    uint64
	CPUSystemNanos  uint64
	CPUTotalNanos   uint64
	OOMKilled       bool
}
