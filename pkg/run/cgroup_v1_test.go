package run

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// v1Dir is the run's directory for controller c, from the cgroup's own bookkeeping.
func v1Dir(t *testing.T, cg cgroup, c string) string {
	t.Helper()
	v1, ok := cg.(*cgroupV1)
	if !ok {
		t.Fatalf("newCgroup gave %T, want *cgroupV1", cg)
	}
	d := v1.byCtrl[c]
	if d == "" {
		t.Fatalf("no %s hierarchy", c)
	}
	return d
}

// blockDevice is some real block device of this host, as "MAJ:MIN".
func blockDevice(t *testing.T) (uint32, uint32) {
	t.Helper()
	ents, err := os.ReadDir("/sys/dev/block")
	if err != nil || len(ents) == 0 {
		t.Skipf("no block device: %v", err)
	}
	var maj, min uint32
	for _, e := range ents {
		a, b, _ := strings.Cut(e.Name(), ":")
		x, err1 := strconv.ParseUint(a, 10, 32)
		y, err2 := strconv.ParseUint(b, 10, 32)
		if err1 == nil && err2 == nil && x != 7 { // not a loop device
			return uint32(x), uint32(y)
		}
		maj, min = uint32(x), uint32(y)
	}
	return maj, min
}

// TestCgroupV1Limits writes every limit through newCgroup and reads the kernel's view back.
func TestCgroupV1Limits(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	maj, min := blockDevice(t)
	dev := strconv.Itoa(int(maj)) + ":" + strconv.Itoa(int(min))
	l := Limits{
		MemoryBytes:    64 << 20,
		CPUs:           0.5,
		CPUShares:      512,
		PidsLimit:      42,
		DeviceReadBps:  []DeviceRate{{Major: maj, Minor: min, BytesPerSec: 1 << 20}},
		DeviceWriteBps: []DeviceRate{{Major: maj, Minor: min, BytesPerSec: 2 << 20}},
	}
	cg := newTestCgroup(t, cgID(t), l)
	tests := []struct{ ctrl, file, want string }{
		{"memory", "memory.limit_in_bytes", "67108864"},
		{"memory", "memory.memsw.limit_in_bytes", "67108864"},
		{"cpu", "cpu.cfs_period_us", "100000"},
		{"cpu", "cpu.cfs_quota_us", "50000"},
		{"cpu", "cpu.shares", "512"},
		{"pids", "pids.max", "42"},
		{"blkio", "blkio.throttle.read_bps_device", dev + " 1048576"},
		{"blkio", "blkio.throttle.write_bps_device", dev + " 2097152"},
		{"devices", "devices.list", "c 1:3 rwm\nc 1:5 rwm\nc 1:7 rwm\nc 1:8 rwm\nc 1:9 rwm\nc 5:0 rwm\nc 5:2 rwm\nc 136:* rwm"},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			dir := v1Dir(t, cg, tt.ctrl)
			b, err := os.ReadFile(filepath.Join(dir, tt.file))
			if errors.Is(err, os.ErrNotExist) && tt.file == "memory.memsw.limit_in_bytes" {
				t.Skip("no swap accounting on this kernel")
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(b)); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.file, got, tt.want)
			}
		})
	}
}

// TestCgroupV1KillForking moves a process that keeps forking into the cgroup and checks that Kill
// leaves nothing behind, then that Close removes the directory in every hierarchy.
func TestCgroupV1KillForking(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	cg := newTestCgroup(t, cgID(t), Limits{})
	h := startCgHelper(t, nil, "spawn")
	if err := cg.Apply(h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	h.release(t)
	if got := h.line(t); got != "spawning" {
		t.Fatalf("helper said %q", got)
	}
	freezer := v1Dir(t, cg, "freezer")
	waitFor(t, "10 processes in the cgroup", func() bool { return len(procsOf(t, freezer)) >= 10 })
	seen := procsOf(t, v1Dir(t, cg, "memory"))

	if err := cg.Kill(); err != nil { // before the test reaps the helper: zombies must not block it
		t.Fatalf("Kill: %v", err)
	}
	v1 := cg.(*cgroupV1)
	for _, d := range v1.dirs {
		if p := procsOf(t, d); len(p) != 0 {
			t.Errorf("%s still has %v", d, p)
		}
	}
	if err := h.wait(); !killedBy(err, syscall.SIGKILL) {
		t.Errorf("helper ended with %v, want SIGKILL", err)
	}
	for _, p := range seen {
		if p == h.cmd.Process.Pid {
			continue
		}
		if alive(p) {
			t.Errorf("pid %d survived Kill", p)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(freezer, "freezer.state")); strings.TrimSpace(string(b)) != "THAWED" {
		t.Errorf("freezer.state after Kill = %q, want THAWED", b)
	}
	if err := cg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, d := range v1.dirs {
		if _, err := os.Stat(d); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s still exists after Close: %v", d, err)
		}
	}
}

// alive reports whether pid exists and is not a zombie waiting for its new parent to reap it.
func alive(pid int) bool {
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X')
}

// TestCgroupV1Freeze checks that freezing stops a spinning process (its CPU time stands still
// across a scheduling interval) and thawing lets it run again.
func TestCgroupV1Freeze(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	cg := newTestCgroup(t, cgID(t), Limits{})
	h := startCgHelper(t, nil, "spin")
	pid := h.cmd.Process.Pid
	if err := cg.Apply(pid); err != nil {
		t.Fatal(err)
	}
	h.release(t)
	waitFor(t, "the process to spin", func() bool { return cpuTicks(t, pid) > 0 })
	freezer := v1Dir(t, cg, "freezer")
	if err := freezeV1(freezer, "FROZEN"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(freezer, "freezer.state")); strings.TrimSpace(string(b)) != "FROZEN" {
		t.Fatalf("freezer.state = %q, want FROZEN", b)
	}
	before := cpuTicks(t, pid)
	time.Sleep(100 * time.Millisecond) // ten ticks of CPU time for a spinning process that is not frozen
	if after := cpuTicks(t, pid); after != before {
		t.Errorf("frozen process used CPU: %d → %d ticks", before, after)
	}
	if err := freezeV1(freezer, "THAWED"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thawed process to use CPU", func() bool { return cpuTicks(t, pid) > before })
}

// TestCgroupV1OOM runs an allocator under a 32 MiB limit: one that stays below is left alone,
// one that goes above is OOM-killed and Stats says so.
func TestCgroupV1OOM(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	tests := []struct {
		name   string
		mib    string
		wantOO bool
	}{
		{"below", "4", false},
		{"above", "256", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, cgID(t), Limits{MemoryBytes: 32 << 20})
			h := startCgHelper(t, nil, "alloc", tt.mib)
			if err := cg.Apply(h.cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			h.release(t)
			err := h.wait()
			if tt.wantOO != killedBy(err, syscall.SIGKILL) {
				t.Errorf("allocator of %s MiB ended with %v", tt.mib, err)
			}
			st, err := cg.Stats()
			if err != nil {
				t.Fatalf("Stats: %v", err)
			}
			if st.OOMKilled != tt.wantOO {
				t.Errorf("Stats().OOMKilled = %v, want %v", st.OOMKilled, tt.wantOO)
			}
			// The charge that trips the limit is counted before the kill: allow a little above it.
			if st.MemoryPeakBytes == 0 || st.MemoryPeakBytes > 33<<20 {
				t.Errorf("peak memory %d, want in (0, 33 MiB]", st.MemoryPeakBytes)
			}
			if st.CPUTotalNanos == 0 { // user and system are tick-based and may both be 0
				t.Errorf("no CPU time in %+v", st)
			}
		})
	}
}

// TestCgroupV1Pids checks that pids.max stops a process from forking past the limit.
func TestCgroupV1Pids(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	const limit = 16
	cg := newTestCgroup(t, cgID(t), Limits{PidsLimit: limit})
	h := startCgHelper(t, nil, "fork", "50")
	if err := cg.Apply(h.cmd.Process.Pid); err != nil {
		t.Fatal(err)
	}
	h.release(t)
	// The helper reports how many children it started; the Go runtime may instead die when it
	// cannot create a thread at the limit, which is the limit working too. The kernel's own
	// counters below are the proof either way.
	if got, err := h.out.ReadString('\n'); err == nil {
		n, eagain, _ := strings.Cut(strings.TrimSpace(got), " ")
		if started, _ := strconv.Atoi(n); started >= limit || eagain != "true" {
			t.Errorf("helper started %s children (EAGAIN: %s), want fewer than %d and EAGAIN", n, eagain, limit)
		}
	} else {
		t.Logf("helper gave no report (%v): %v", err, h.wait())
	}
	pids := v1Dir(t, cg, "pids")
	if cur, err := readUint(pids, "pids.current"); err != nil || cur > limit {
		t.Errorf("pids.current = %d (%v), want ≤ %d", cur, err, limit)
	}
	if b, _ := os.ReadFile(filepath.Join(pids, "pids.events")); !strings.HasPrefix(string(b), "max ") || strings.TrimSpace(string(b)) == "max 0" {
		t.Errorf("pids.events = %q, want a non-zero max count", b)
	}
}

// deviceCases are device opens from inside a run's cgroup: the run's /dev nodes work (also when
// mknod'ed elsewhere), any other device is EPERM.
func deviceCases(t *testing.T) []struct{ name, path, want string } {
	return []struct{ name, path, want string }{
		{"dev-null", "/dev/null", "ok"},
		{"dev-urandom", "/dev/urandom", "ok"},
		{"mknod-1:3-null", mknodDev(t, 1, 3), "ok"},
		{"mknod-1:1-mem", mknodDev(t, 1, 1), "EPERM"},
		{"mknod-1:11-kmsg", mknodDev(t, 1, 11), "EPERM"},
		{"mknod-4:1-tty1", mknodDev(t, 4, 1), "EPERM"},
	}
}

// TestCgroupV1Devices checks the devices cgroup: /dev/null opens, a 1:1 node does not.
func TestCgroupV1Devices(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	for _, tt := range deviceCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, cgID(t), Limits{})
			h := startCgHelper(t, nil, "open", tt.path)
			if err := cg.Apply(h.cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			h.release(t)
			if got := h.line(t); got != tt.want {
				t.Errorf("open %s in the cgroup: %s, want %s", tt.path, got, tt.want)
			}
		})
	}
}

// TestCgroupV1SelfJoin moves one locked thread into the cgroup with joinCgroupSelf, as the run's
// init does before execve: a process it starts is inside (and is OOM-killed under the limit),
// while the rest of this process stays outside.
func TestCgroupV1SelfJoin(t *testing.T) {
	cgNeedV1(t)
	forceCgroup(t, "v1")
	cg := newTestCgroup(t, cgID(t), Limits{MemoryBytes: 32 << 20})
	v1 := cg.(*cgroupV1)
	type result struct {
		threadCg string
		err      error
		killErr  error
		h        *cgHelper
	}
	done := make(chan result, 1)
	var join func()
	join = func() {
		runtime.LockOSThread()
		if unix.Gettid() == os.Getpid() {
			// The main thread never exits, so it must not join: try on another thread.
			runtime.UnlockOSThread()
			go join()
			return
		}
		// Never unlocked: the thread ends with this goroutine, so it cannot carry the cgroup
		// into the rest of the test process.
		var r result
		if r.err = joinCgroupSelf(cg.(cgroupSelfJoin).selfJoinFiles()); r.err == nil {
			b, _ := os.ReadFile("/proc/thread-self/cgroup")
			r.threadCg = string(b)
			r.h = startCgHelper(t, nil, "alloc", "256") // forked from this thread
			r.killErr = cg.Kill()                       // must refuse: it would freeze this thread
		}
		done <- r
	}
	go join()
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if r.killErr == nil || !strings.Contains(r.killErr.Error(), "refusing") {
		t.Errorf("Kill with a thread of the test process inside: %v, want a refusal", r.killErr)
	}
	if n := strings.Count(r.threadCg, "/"+cgroupParent+"/"+v1.id+"\n"); n != len(v1.dirs) {
		t.Errorf("thread in %d of %d hierarchies:\n%s", n, len(v1.dirs), r.threadCg)
	}
	if b, _ := os.ReadFile("/proc/self/cgroup"); strings.Contains(string(b), cgroupParent+"/") {
		t.Errorf("the whole test process moved:\n%s", b)
	}
	// The joined thread is gone once its goroutine ended; only the helper remains.
	waitFor(t, "only the helper in the cgroup", func() bool {
		p := procsOf(t, v1.byCtrl["memory"])
		return len(p) == 1 && p[0] == r.h.cmd.Process.Pid
	})
	r.h.release(t)
	if err := r.h.wait(); !killedBy(err, syscall.SIGKILL) {
		t.Errorf("allocator ended with %v, want SIGKILL", err)
	}
	if st, err := cg.Stats(); err != nil || !st.OOMKilled {
		t.Errorf("Stats = %+v, %v; want OOMKilled", st, err)
	}
}
