package run

import (
	"errors"
	"os"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

// v2Of returns the *cgroupV2 behind cg.
func v2Of(t *testing.T, cg cgroup) *cgroupV2 {
	t.Helper()
	v2, ok := cg.(*cgroupV2)
	if !ok {
		t.Fatalf("newCgroup gave %T, want *cgroupV2", cg)
	}
	return v2
}

// startInV2 starts the helper directly inside cg through clone3 CLONE_INTO_CGROUP (fd()), so it
// is a member from its first instruction, and releases it.
func startInV2(t *testing.T, cg cgroup, args ...string) *cgHelper {
	t.Helper()
	fd := cg.(cgroupFD).fd()
	if fd < 0 {
		t.Fatalf("fd() = %d on cgroup v2", fd)
	}
	h := startCgHelper(t, &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}, args...)
	h.release(t)
	return h
}

// TestCgroupV2Membership checks that a child cloned into the cgroup through fd() is in it, that
// Apply moves another process in, and that Close kills them and removes the directory.
func TestCgroupV2Membership(t *testing.T) {
	cgNeedV2(t)
	forceCgroup(t, "v2")
	cg := newTestCgroup(t, cgID(t), Limits{})
	v2 := v2Of(t, cg)
	a := startInV2(t, cg, "sleep")
	b := startCgHelper(t, nil, "sleep")
	if err := cg.Apply(b.cmd.Process.Pid); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	got := procsOf(t, v2.dir)
	for _, h := range []*cgHelper{a, b} {
		if !slices.Contains(got, h.cmd.Process.Pid) {
			t.Errorf("pid %d not in %s (cgroup.procs: %v)", h.cmd.Process.Pid, v2.dir, got)
		}
	}
	if err := cg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for _, h := range []*cgHelper{a, b} {
		if err := h.wait(); !killedBy(err, syscall.SIGKILL) {
			t.Errorf("helper ended with %v, want SIGKILL", err)
		}
	}
	if _, err := os.Stat(v2.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s still exists after Close: %v", v2.dir, err)
	}
}

// TestCgroupV2Kill kills a forking process tree both ways: cgroup.kill, and the freeze-and-kill
// fallback for kernels without it.
func TestCgroupV2Kill(t *testing.T) {
	cgNeedV2(t)
	forceCgroup(t, "v2")
	tests := []struct {
		name string
		kill func(*cgroupV2) error
	}{
		{"cgroup.kill", (*cgroupV2).Kill},
		{"freeze", func(cg *cgroupV2) error {
			return cg.freezeKill(func() (bool, error) { p, err := cg.populated(); return !p, err })
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, cgID(t), Limits{})
			v2 := v2Of(t, cg)
			if _, err := os.Stat(v2.dir + "/cgroup.kill"); err != nil && tt.name == "cgroup.kill" {
				t.Skipf("no cgroup.kill (kernel before 5.14): %v", err)
			}
			h := startInV2(t, cg, "spawn")
			if got := h.line(t); got != "spawning" {
				t.Fatalf("helper said %q", got)
			}
			waitFor(t, "10 processes in the cgroup", func() bool { return len(procsOf(t, v2.dir)) >= 10 })
			seen := procsOf(t, v2.dir)
			if err := tt.kill(v2); err != nil {
				t.Fatalf("kill: %v", err)
			}
			if p := procsOf(t, v2.dir); len(p) != 0 {
				t.Errorf("cgroup still has %v", p)
			}
			if b, _ := os.ReadFile(v2.dir + "/cgroup.freeze"); strings.TrimSpace(string(b)) != "0" {
				t.Errorf("cgroup.freeze after kill = %q, want 0", b)
			}
			if err := h.wait(); !killedBy(err, syscall.SIGKILL) {
				t.Errorf("helper ended with %v, want SIGKILL", err)
			}
			for _, p := range seen {
				if p != h.cmd.Process.Pid && alive(p) {
					t.Errorf("pid %d survived", p)
				}
			}
		})
	}
}

// TestCgroupV2Freeze checks cgroup.freeze on a spinning process, and that Stats reads its CPU
// time from cpu.stat.
func TestCgroupV2Freeze(t *testing.T) {
	cgNeedV2(t)
	forceCgroup(t, "v2")
	cg := newTestCgroup(t, cgID(t), Limits{})
	v2 := v2Of(t, cg)
	h := startInV2(t, cg, "spin")
	pid := h.cmd.Process.Pid
	waitFor(t, "the process to spin", func() bool { return cpuTicks(t, pid) > 0 })
	if err := v2.freeze(true); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(v2.dir + "/cgroup.events"); !strings.Contains(string(b), "frozen 1") {
		t.Fatalf("cgroup.events = %q, want frozen 1", b)
	}
	before := cpuTicks(t, pid)
	time.Sleep(100 * time.Millisecond) // ten ticks of CPU time for a spinning process that is not frozen
	if after := cpuTicks(t, pid); after != before {
		t.Errorf("frozen process used CPU: %d → %d ticks", before, after)
	}
	if err := v2.freeze(false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the thawed process to use CPU", func() bool { return cpuTicks(t, pid) > before })
	st, err := cg.Stats()
	if err != nil {
		t.Fatalf("Stats: %v", err)
	}
	if st.CPUTotalNanos == 0 || st.CPUUserNanos == 0 {
		t.Errorf("no CPU time in %+v", st)
	}
}

// TestCgroupV2Devices checks the eBPF device filter with the same cases as the v1 devices cgroup.
func TestCgroupV2Devices(t *testing.T) {
	cgNeedV2(t)
	forceCgroup(t, "v2")
	for _, tt := range deviceCases(t) {
		t.Run(tt.name, func(t *testing.T) {
			cg := newTestCgroup(t, cgID(t), Limits{})
			h := startInV2(t, cg, "open", tt.path)
			if got := h.line(t); got != tt.want {
				t.Errorf("open %s in the cgroup: %s, want %s", tt.path, got, tt.want)
			}
		})
	}
}

// TestCgroupV2MissingController asks for limits whose controllers the cgroup2 mount does not
// offer (on hybrid hosts they are bound to v1) and expects one error naming the controller.
func TestCgroupV2MissingController(t *testing.T) {
	m := cgNeedV2(t)
	forceCgroup(t, "v2")
	avail, err := os.ReadFile(m.unified + "/cgroup.controllers")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		ctrl string
		l    Limits
	}{
		{"memory", Limits{MemoryBytes: 64 << 20}},
		{"pids", Limits{PidsLimit: 10}},
		{"cpu", Limits{CPUs: 1}},
	}
	for _, tt := range tests {
		t.Run(tt.ctrl, func(t *testing.T) {
			if slices.Contains(strings.Fields(string(avail)), tt.ctrl) {
				t.Skipf("%s is available on this cgroup2 mount", tt.ctrl)
			}
			cg, err := newCgroup(cgID(t), tt.l)
			if err == nil {
				cg.Close()
				t.Fatal("newCgroup succeeded")
			}
			if !errors.Is(err, ErrControllerMissing) || !strings.Contains(err.Error(), `"`+tt.ctrl+`"`) {
				t.Errorf("error %q: want ErrControllerMissing naming %q", err, tt.ctrl)
			}
			if _, err := os.Stat(m.unified + "/" + cgroupParent + "/" + cgID(t)); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("failed newCgroup left its directory: %v", err)
			}
		})
	}
}
