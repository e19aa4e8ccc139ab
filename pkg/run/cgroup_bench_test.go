package run

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"testing"
)

// origins maps each hierarchy imgrun uses (and the cgroup2 mount) to the directory pid is in now,
// so a benchmark can move a process back out of a run's cgroup, as its exit would.
func origins(b *testing.B, m *mounts, pid int) []string {
	b.Helper()
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/cgroup")
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" && m.unified != "" {
			out = append(out, m.unified+parts[2])
			continue
		}
		for _, h := range m.v1 {
			if strings.Split(parts[1], ",")[0] == h.controllers[0] {
				out = append(out, h.dir+parts[2])
			}
		}
	}
	return out
}

// benchLifecycle measures newCgroup + Apply + Close, the cgroup cost on every run's warm path.
// The process is moved back out before Close, standing in for the run's exit.
func benchLifecycle(b *testing.B, version string, l Limits) {
	b.Helper()
	old := cgroupVersion
	cgroupVersion = version
	defer func() { cgroupVersion = old }()
	m, err := cgroupMounts()
	if err != nil {
		b.Fatal(err)
	}
	h := startCgHelper(b, nil, "sleep")
	h.release(b)
	pid := h.cmd.Process.Pid
	home := origins(b, m, pid)
	for i := 0; b.Loop(); i++ {
		cg, err := newCgroup("bench-"+strconv.Itoa(os.Getpid())+"-"+strconv.Itoa(i), l)
		if err != nil {
			b.Fatal(err)
		}
		if err := cg.Apply(pid); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		for _, d := range home {
			if err := writeCgroupFile(d, "cgroup.procs", strconv.Itoa(pid)); err != nil {
				b.Fatal(err)
			}
		}
		b.StartTimer()
		if err := cg.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCgroupV1Lifecycle(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if m, err := cgroupMounts(); err != nil || len(m.v1) == 0 {
		b.Skip("no cgroup v1")
	}
	b.Run("no-limits", func(b *testing.B) { benchLifecycle(b, "v1", Limits{}) })
	b.Run("memory+pids+cpus", func(b *testing.B) {
		benchLifecycle(b, "v1", Limits{MemoryBytes: 256 << 20, PidsLimit: 100, CPUs: 1})
	})
}

func BenchmarkCgroupV2Lifecycle(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root")
	}
	if m, err := cgroupMounts(); err != nil || m.unified == "" {
		b.Skip("no cgroup v2")
	}
	b.Run("no-limits", func(b *testing.B) { benchLifecycle(b, "v2", Limits{}) })
}
