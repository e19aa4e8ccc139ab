package run

import (
	"errors"
	"os"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/testutil"
)

// runCgroupDirs lists the directories of a run's cgroup (or of none) that exist.
func runCgroupDirs(t *testing.T, cg cgroup) []string {
	t.Helper()
	var dirs []string
	switch c := cg.(type) {
	case *cgroupV1:
		dirs = c.dirs
	case *cgroupV2:
		dirs = []string{c.dir}
	case noopCgroup:
	default:
		t.Fatalf("unexpected cgroup %T", cg)
	}
	var there []string
	for _, d := range dirs {
		if _, err := os.Stat(d); err == nil {
			there = append(there, d)
		}
	}
	return there
}

// TestCgroupStartEnds checks the life of a run begun with Start: its init runs (in the run's
// cgroup when the spec asks for stats or limits) before Run is called; Abort, and a Run refused
// because its Spec would start the init differently or is bad, kill the init and remove the
// cgroup; Run or Abort after either is refused or does nothing. Start itself refuses a limit no
// kernel takes, before starting anything.
func TestCgroupStartEnds(t *testing.T) {
	testutil.RequiresRoot(t)
	rootfs := testRootfs(t)
	abort := func(st *Started) error { return st.Abort() }
	tests := []struct {
		name   string
		launch Spec
		end    func(st *Started) error
		is     error
	}{
		{"abort without cgroup", Spec{}, abort, nil},
		{"abort with stats", Spec{Stats: true}, abort, nil},
		{"abort with limits", Spec{Limits: Limits{PidsLimit: 64}}, abort, nil},
		{"run with other stats", Spec{Stats: true}, func(st *Started) error {
			_, err := st.Run(t.Context(), Spec{Rootfs: rootfs, StateDir: t.TempDir(), Args: []string{"true"}})
			return err
		}, ErrBadSpec},
		{"run with another network", Spec{}, func(st *Started) error {
			_, err := st.Run(t.Context(), Spec{Rootfs: rootfs, StateDir: t.TempDir(), Args: []string{"true"}, Network: NetworkHost})
			return err
		}, ErrBadSpec},
		{"run with a bad spec", Spec{Stats: true}, func(st *Started) error {
			_, err := st.Run(t.Context(), Spec{Rootfs: rootfs, StateDir: t.TempDir(), Stats: true})
			return err
		}, ErrNoCommand},
	}
	if _, err := Start(Spec{Limits: Limits{MemoryBytes: 1 << 20}}, Stdio{}); !errors.Is(err, ErrLimitRejected) {
		t.Errorf("Start with a 1 MiB memory limit: err = %v, want %v", err, ErrLimitRejected)
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st, err := Start(tc.launch, Stdio{})
			if err != nil {
				t.Fatalf("Start: %v", err)
			}
			if <-st.ready; st.err != nil {
				t.Fatalf("starting the init: %v", st.err)
			}
			pid := st.l.proc.pid
			if unix.Kill(pid, 0) != nil {
				t.Fatalf("init %d is not running after Start", pid)
			}
			dirs := runCgroupDirs(t, st.l.cg)
			wantCgroup := tc.launch.Stats || !tc.launch.Limits.isZero()
			if wantCgroup != (len(dirs) > 0) {
				t.Fatalf("cgroup dirs %v after Start, want a cgroup: %v", dirs, wantCgroup)
			}
			for _, d := range dirs {
				if procs := procsOf(t, d); len(procs) != 1 || procs[0] != pid {
					t.Errorf("%s holds %v, want the init %d", d, procs, pid)
				}
			}

			if err := tc.end(st); !errors.Is(err, tc.is) || (tc.is == nil) != (err == nil) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if err := unix.Kill(pid, 0); err != unix.ESRCH {
				t.Errorf("init %d still exists (kill 0: %v)", pid, err)
			}
			if left := runCgroupDirs(t, st.l.cg); len(left) > 0 {
				t.Errorf("cgroup dirs %v remain", left)
			}
			if _, err := st.Run(t.Context(), Spec{Rootfs: rootfs, Args: []string{"true"}}); err == nil {
				t.Error("Run after the run ended succeeded")
			}
			if err := st.Abort(); err != nil {
				t.Errorf("second Abort: %v", err)
			}
		})
	}
}
