package run

import (
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/testutil"
	"golang.org/x/sys/unix"
)

func TestParseMountinfo(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		v1      []hierarchy
		unified string
	}{
		{
			name: "hybrid",
			in: `31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
38 31 0:35 / /sys/fs/cgroup/blkio rw,relatime - cgroup cgroup rw,blkio
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`,
			v1: []hierarchy{
				{"/sys/fs/cgroup/freezer", []string{"freezer"}},
				{"/sys/fs/cgroup/devices", []string{"devices"}},
				{"/sys/fs/cgroup/memory", []string{"memory"}},
				{"/sys/fs/cgroup/pids", []string{"pids"}},
				{"/sys/fs/cgroup/cpu", []string{"cpu"}},
				{"/sys/fs/cgroup/cpuacct", []string{"cpuacct"}},
				{"/sys/fs/cgroup/blkio", []string{"blkio"}},
			},
			unified: "/sys/fs/cgroup/unified",
		},
		{
			name: "co-mounted, optional fields, escaped path",
			in: `25 18 0:22 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:9 - cgroup cgroup rw,cpu,cpuacct
26 18 0:23 /docker/abc /my\040cg/memory rw shared:10 master:3 - cgroup cgroup rw,memory
`,
			v1: []hierarchy{
				{"/my cg/memory", []string{"memory"}},
				{"/sys/fs/cgroup/cpu,cpuacct", []string{"cpu", "cpuacct"}},
			},
		},
		{
			name:    "pure v2",
			in:      "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n",
			unified: "/sys/fs/cgroup",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseMountinfo(strings.NewReader(tt.in))
			if err != nil {
				t.Fatal(err)
			}
			if !slices.EqualFunc(m.v1, tt.v1, func(a, b hierarchy) bool {
				return a.dir == b.dir && slices.Equal(a.controllers, b.controllers)
			}) {
				t.Errorf("v1 = %v, want %v", m.v1, tt.v1)
			}
			if m.unified != tt.unified {
				t.Errorf("unified = %q, want %q", m.unified, tt.unified)
			}
		})
	}
}

// TestCgroupSettings checks the formatting of every limit for both versions (a pure function;
// the kernel's acceptance of the v1 values is TestCgroupV1Limits, and of v2 needs a v2 host).
func TestCgroupSettings(t *testing.T) {
	dev := []DeviceRate{{Path: "/dev/vda", Major: 254, Minor: 0, BytesPerSec: 1 << 20}}
	tests := []struct {
		name   string
		l      Limits
		v1, v2 []string
	}{
		{"none", Limits{}, nil, nil},
		{"memory", Limits{MemoryBytes: 80 << 20},
			[]string{"memory.limit_in_bytes=83886080", "memory.memsw.limit_in_bytes=83886080?"},
			[]string{"memory.max=83886080", "memory.swap.max=0?"}},
		{"cpus", Limits{CPUs: 1.5},
			[]string{"cpu.cfs_period_us=100000", "cpu.cfs_quota_us=150000"},
			[]string{"cpu.max=150000 100000"}},
		{"cpu-shares", Limits{CPUShares: 1024},
			[]string{"cpu.shares=1024"}, []string{"cpu.weight=39"}},
		{"pids", Limits{PidsLimit: 100},
			[]string{"pids.max=100"}, []string{"pids.max=100"}},
		{"read bps", Limits{DeviceReadBps: dev},
			[]string{"blkio.throttle.read_bps_device=254:0 1048576"}, []string{"io.max=254:0 rbps=1048576"}},
		{"read and write bps", Limits{DeviceReadBps: dev, DeviceWriteBps: []DeviceRate{
			{Major: 254, Minor: 0, BytesPerSec: 5}, {Major: 8, Minor: 16, BytesPerSec: 7}}},
			[]string{"blkio.throttle.read_bps_device=254:0 1048576", "blkio.throttle.write_bps_device=254:0 5",
				"blkio.throttle.write_bps_device=8:16 7"},
			[]string{"io.max=254:0 rbps=1048576 wbps=5", "io.max=8:16 wbps=7"}},
	}
	show := func(s []setting) []string {
		var out []string
		for _, x := range s {
			v := x.file + "=" + x.val
			if x.optional {
				v += "?"
			}
			out = append(out, v)
		}
		return out
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := show(v1Settings(tt.l)); !slices.Equal(got, tt.v1) {
				t.Errorf("v1 = %q, want %q", got, tt.v1)
			}
			if got := show(v2Settings(tt.l)); !slices.Equal(got, tt.v2) {
				t.Errorf("v2 = %q, want %q", got, tt.v2)
			}
		})
	}
}

func TestSharesToWeight(t *testing.T) {
	for _, tt := range []struct{ shares, weight uint64 }{
		{0, 0}, {2, 1}, {512, 20}, {1024, 39}, {262144, 10000},
	} {
		if got := sharesToWeight(tt.shares); got != tt.weight {
			t.Errorf("sharesToWeight(%d) = %d, want %d", tt.shares, got, tt.weight)
		}
	}
}

// TestNewCgroupErrors checks the one-line errors for bad ids and limits; none may leave a cgroup.
func TestNewCgroupErrors(t *testing.T) {
	tests := []struct {
		name string
		id   string
		l    Limits
		want error
		msg  string
	}{
		{"empty id", "", Limits{}, nil, "bad run id"},
		{"dot id", "..", Limits{}, nil, "bad run id"},
		{"slash id", "a/b", Limits{}, nil, "bad run id"},
		{"memory 1 KiB", "x", Limits{MemoryBytes: 1024}, ErrLimitRejected, "below the minimum of 6 MiB"},
		{"negative memory", "x", Limits{MemoryBytes: -1}, ErrLimitRejected, "negative"},
		{"cpus too small", "x", Limits{CPUs: 0.001}, ErrLimitRejected, "below the minimum"},
		{"shares out of range", "x", Limits{CPUShares: 1}, ErrLimitRejected, "2..262144"},
		{"negative pids", "x", Limits{PidsLimit: -5}, ErrLimitRejected, "negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cg, err := newCgroup(tt.id, tt.l)
			if err == nil {
				cg.Close()
				t.Fatal("newCgroup succeeded")
			}
			if tt.want != nil && !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("error %q, want %v containing %q", err, tt.want, tt.msg)
			}
		})
	}
}

// TestCgroupV1MissingController asks for a pids limit on a host view without the pids hierarchy.
func TestCgroupV1MissingController(t *testing.T) {
	m := cgNeedV1(t)
	var noPids mounts
	for _, h := range m.v1 {
		if !h.has("pids") {
			noPids.v1 = append(noPids.v1, h)
		}
	}
	_, err := newCgroupV1(&noPids, cgID(t), Limits{PidsLimit: 5})
	if !errors.Is(err, ErrControllerMissing) || !strings.Contains(err.Error(), `"pids"`) {
		t.Fatalf("error %v: want ErrControllerMissing naming pids", err)
	}
	for _, h := range m.v1 {
		if _, err := os.Stat(filepath.Join(h.dir, cgroupParent, cgID(t))); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("left %s behind: %v", h.dir, err)
		}
	}
}

// TestCleanupStaleCgroups removes the cgroups and lock files of dead runs however new their
// directories look, and leaves live runs' cgroups (one created a moment ago included) and busy ones.
func TestCleanupStaleCgroups(t *testing.T) {
	testutil.RequiresRoot(t)
	for _, v := range []string{"v1", "v2"} {
		t.Run(v, func(t *testing.T) {
			m := cgNeedV2OrV1(t, v)
			forceCgroup(t, v)
			dirs := func(cg cgroup) []string {
				switch c := cg.(type) {
				case *cgroupV1:
					return c.dirs
				case *cgroupV2:
					return []string{c.dir}
				}
				t.Fatalf("unexpected %T", cg)
				return nil
			}
			// What a crashed imgrun leaves: the directories and the lock file, not locked.
			crash := func(cg cgroup) *runLock {
				var l *runLock
				switch c := cg.(type) {
				case *cgroupV1:
					l = c.lock
				case *cgroupV2:
					l = c.lock
				}
				unix.Close(l.fd)
				l.fd = -1
				return l
			}
			lockFile := func(id string) string { return cgroupLockDir() + "/" + id }
			type run struct {
				dirs     []string
				lock     string
				wantDirs bool // the cgroup dirs survive cleanup
				wantLock bool // the lock file survives cleanup
			}
			runs := map[string]run{}

			crashed := newTestCgroup(t, cgID(t)+"-crashed", Limits{})
			crash(crashed)
			runs["crashed"] = run{dirs(crashed), lockFile(cgID(t) + "-crashed"), false, false}

			busy := newTestCgroup(t, cgID(t)+"-busy", Limits{})
			h := startCgHelper(t, nil, "sleep")
			if err := busy.Apply(h.cmd.Process.Pid); err != nil {
				t.Fatal(err)
			}
			crash(busy)
			runs["busy"] = run{dirs(busy), lockFile(cgID(t) + "-busy"), true, false}

			// A dead run's cgroup whose directory is brand new (as kernfs may make any look): no lock file.
			var fresh []string
			parents := []string{m.unified + "/" + cgroupParent}
			if v == "v1" {
				parents = parents[:0]
				for _, h := range m.v1 {
					parents = append(parents, h.dir+"/"+cgroupParent)
				}
			}
			for _, p := range parents {
				d, err := mkdirCgroup(p, cgID(t)+"-fresh-dead")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { unix.Rmdir(d) })
				fresh = append(fresh, d)
			}
			if fi, err := os.Stat(fresh[0]); err != nil {
				t.Fatal(err)
			} else if time.Since(fi.ModTime()) > time.Minute {
				t.Fatalf("new cgroup dir %s has mtime %v", fresh[0], fi.ModTime())
			}
			runs["fresh-dead"] = run{fresh, lockFile(cgID(t) + "-fresh-dead"), false, false}

			// A lock file of a run killed before its first mkdir.
			orphan := lockFile(cgID(t) + "-orphan")
			if err := os.WriteFile(orphan, nil, 0o600); err != nil {
				t.Fatal(err)
			}
			runs["orphan-lock"] = run{nil, orphan, false, false}

			// A live run's cgroup, created a moment ago.
			live := newTestCgroup(t, cgID(t)+"-live", Limits{})
			runs["live"] = run{dirs(live), lockFile(cgID(t) + "-live"), true, true}

			if err := cleanupStaleCgroups(); err != nil {
				t.Fatalf("cleanupStaleCgroups: %v", err)
			}
			exists := func(p string) bool { _, err := os.Stat(p); return err == nil }
			for name, r := range runs {
				for _, d := range r.dirs {
					if exists(d) != r.wantDirs {
						t.Errorf("%s: cgroup %s exists: %v, want %v", name, d, exists(d), r.wantDirs)
					}
				}
				if exists(r.lock) != r.wantLock {
					t.Errorf("%s: lock file %s exists: %v, want %v", name, r.lock, exists(r.lock), r.wantLock)
				}
			}
			if err := live.Close(); err != nil {
				t.Fatal(err)
			}
			for _, p := range append(dirs(live), lockFile(cgID(t)+"-live")) {
				if exists(p) {
					t.Errorf("%s exists after Close", p)
				}
			}
		})
	}
}

// cgNeedV2OrV1 skips the test unless cgroup version v ("v1" or "v2") is mounted.
func cgNeedV2OrV1(t *testing.T, v string) *mounts {
	t.Helper()
	if v == "v1" {
		return cgNeedV1(t)
	}
	return cgNeedV2(t)
}

// TestLockRun checks that a run's lock excludes a second taker and cleanup, and that a lock file
// unlinked under a taker (by a cleanup between its open and its flock) is not trusted.
func TestLockRun(t *testing.T) {
	testutil.RequiresRoot(t)
	id := cgID(t)
	l, err := lockRun(id)
	if err != nil {
		t.Fatal(err)
	}
	if l2, err := lockRun(id); err == nil {
		l2.release()
		t.Fatal("second lockRun of a held id succeeded")
	}
	if err := reapRun(cgroupLockDir(), id, nil); err != nil {
		t.Fatal(err)
	}
	if !sameFile(l.fd, l.path) {
		t.Fatalf("cleanup removed the held lock file %s", l.path)
	}
	// Unlinked under its holder (the race lockRun guards against): a new run gets a new file.
	if err := os.Remove(l.path); err != nil {
		t.Fatal(err)
	}
	l2, err := lockRun(id)
	if err != nil {
		t.Fatalf("lockRun after the file was unlinked: %v", err)
	}
	if sameFile(l.fd, l2.path) {
		t.Error("lockRun reused the unlinked file")
	}
	l.release()
	if _, err := os.Stat(l2.path); err != nil {
		t.Errorf("releasing the stale lock removed the live file: %v", err)
	}
	l2.release()
	if _, err := os.Stat(l2.path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("lock file after release: %v", err)
	}
}

// TestCgroupRootless runs TestCgroupRootlessChild as nobody (uid 65534): on v1 and v2 without
// delegation, and on v2 inside a cgroup delegated to nobody as systemd's Delegate=yes does
// (the directory and its cgroup.procs, cgroup.subtree_control and cgroup.threads chowned).
func TestCgroupRootless(t *testing.T) {
	testutil.RequiresRoot(t)
	setpriv := testutil.MustBin(t, "setpriv")
	m, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	bin := copyTestBinary(t)
	tests := []struct {
		name, version, mode string
	}{
		{"v1", "v1", "plain"},
		{"v2", "v2", "plain"},
		{"v2-delegated", "v2", "delegated"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.version == "v1" && len(m.v1) == 0 || tt.version == "v2" && m.unified == "" {
				t.Skipf("no cgroup %s", tt.version)
			}
			cmd := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
				bin, "-test.run=^TestCgroupRootlessChild$", "-test.v")
			cmd.Env = []string{"IMGRUN_CGTEST_ROOTLESS=" + tt.mode, "IMGRUN_CGROUP=" + tt.version, "PATH=/usr/bin:/bin"}
			cmd.Dir = filepath.Dir(bin)
			if tt.mode == "delegated" {
				fd := delegatedCgroup(t, m.unified, 65534)
				cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: fd}
			}
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "--- PASS: TestCgroupRootlessChild") {
				t.Errorf("rootless child: %v\n%s", err, out)
			}
		})
	}
}

// copyTestBinary copies this test binary where nobody can execute it.
func copyTestBinary(t *testing.T) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "cgrootless")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "run.test")
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(bin, os.O_CREATE|os.O_WRONLY, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return bin
}

// delegatedCgroup makes a cgroup v2 owned by uid and returns an open fd of it (for
// CLONE_INTO_CGROUP); everything the child leaves below it is removed when the test ends.
func delegatedCgroup(t *testing.T, mount string, uid int) int {
	t.Helper()
	dir := filepath.Join(mount, "imgrun-delegated-"+strconv.Itoa(os.Getpid()))
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads"} {
		if err := os.Chown(filepath.Join(dir, f), uid, uid); err != nil {
			t.Fatal(err)
		}
	}
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		unix.Close(fd)
		for _, d := range []string{cgroupParent, launcherLeaf, ""} {
			if err := rmdirCgroup(filepath.Join(dir, d)); err != nil {
				t.Errorf("remove delegated cgroup: %v", err)
			}
		}
	})
	return fd
}

// TestCgroupRootlessChild runs only inside TestCgroupRootless. Without delegation: no limits gives
// a no-op cgroup, limits give ErrCgroupAccess. With delegation: a real cgroup below the delegated
// one, and limits whose controller is not delegated give ErrControllerMissing.
func TestCgroupRootlessChild(t *testing.T) {
	mode := os.Getenv("IMGRUN_CGTEST_ROOTLESS")
	if mode == "" {
		t.Skip("runs only as the child of TestCgroupRootless")
	}
	if os.Geteuid() == 0 {
		t.Fatal("child runs as root")
	}
	id := "rootless-" + strconv.Itoa(os.Getpid())
	cg, err := newCgroup(id, Limits{})
	if err != nil {
		t.Fatalf("no limits: %v", err)
	}
	defer cg.Close()
	if mode == "plain" {
		if _, ok := cg.(noopCgroup); !ok {
			t.Errorf("no limits: got %T, want noopCgroup", cg)
		}
		_, err = newCgroup(id, Limits{MemoryBytes: 64 << 20})
		if !errors.Is(err, ErrCgroupAccess) {
			t.Errorf("memory limit: error %v, want ErrCgroupAccess", err)
		}
		t.Log(err)
		return
	}
	v2, ok := cg.(*cgroupV2)
	if !ok {
		t.Fatalf("delegated: got %T, want *cgroupV2", cg)
	}
	sleep := exec.Command("/bin/sleep", "60")
	if err := sleep.Start(); err != nil {
		t.Fatal(err)
	}
	if err := cg.Apply(sleep.Process.Pid); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	if p := procsOf(t, v2.dir); !slices.Contains(p, sleep.Process.Pid) {
		t.Errorf("pid %d not in %s: %v", sleep.Process.Pid, v2.dir, p)
	}
	if err := cg.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := sleep.Wait(); !killedBy(err, syscall.SIGKILL) {
		t.Errorf("sleep ended with %v, want SIGKILL", err)
	}
	if _, err := os.Stat(v2.dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s left after Close: %v", v2.dir, err)
	}
	base := filepath.Dir(filepath.Dir(v2.dir))
	avail, _ := os.ReadFile(base + "/cgroup.controllers")
	cg2, err := newCgroup(id+"-mem", Limits{MemoryBytes: 64 << 20})
	switch {
	case slices.Contains(strings.Fields(string(avail)), "memory"):
		if err != nil {
			t.Errorf("memory delegated, but: %v", err)
		} else {
			cg2.Close()
		}
	case !errors.Is(err, ErrControllerMissing) || !strings.Contains(err.Error(), `"memory"`):
		t.Errorf("memory not delegated: error %v, want ErrControllerMissing naming memory", err)
	}
	t.Log(err)
}
