package run

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/testutil"
)

// TestRunInit checks what PID 1 of a run is: by default imgrun's init, which reaps an orphan
// that exits; with NoInit the command itself, which leaves the orphan a zombie (as docker
// run without --init does).
func TestRunInit(t *testing.T) {
	tests := []struct {
		name   string
		noInit bool
		pid1   string // /proc/1/comm
		out    string
	}{
		{name: "init", pid1: "imgrun-init", out: "zombies 0"},
		{name: "no init", noInit: true, pid1: "cat", out: "zombies 1"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runOut(t, Spec{NoInit: tc.noInit, Args: []string{"rthelper", "zombies"}})
			if err != nil || strings.TrimSpace(out) != tc.out {
				t.Fatalf("zombies: out %q, err %v (stderr %q), want %q", out, err, stderr, tc.out)
			}
			out, _, err = runOut(t, Spec{NoInit: tc.noInit, Args: []string{"cat", "/proc/1/comm"}})
			if err != nil || strings.TrimSpace(out) != tc.pid1 {
				t.Fatalf("PID 1 is %q (err %v), want %q", out, err, tc.pid1)
			}
		})
	}
}

// TestRunInitExeInside checks that the run cannot open the init's executable through
// /proc/1/exe, for reading or writing (D1, CVE-2019-5736): the init is not dumpable and the
// run has no CAP_SYS_PTRACE. The run is root with docker's default capabilities.
func TestRunInitExeInside(t *testing.T) {
	for _, mode := range []string{"open", "openw"} {
		for _, path := range []string{"/proc/1/exe", "/proc/1/mem", "/proc/1/root/bin/sh"} {
			out, _, err := runOut(t, Spec{Args: []string{"rthelper", mode, path}})
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != 1 || !strings.Contains(out, "permission denied") {
				t.Errorf("%s %s: out %q, err %v; want permission denied", mode, path, out, err)
			}
		}
	}
}

// TestRunInitExeReadOnly checks from the host that the init runs from a read-only view of
// this binary: whoever holds the init's /proc/N/exe cannot write through it once the run is
// over, so neither can a run that gets hold of it (a command `#!/proc/self/exe` executes that
// file, and the process is dumpable again after that exec).
func TestRunInitExeReadOnly(t *testing.T) {
	testutil.RequiresRoot(t)
	self, err := os.Stat("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, _, err := runOut(t, Spec{Args: []string{"sleep", "2"}}); errc <- err }()
	var pid int
	for deadline := time.Now().Add(10 * time.Second); pid == 0 && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		pid = childRunningExe(t, self)
	}
	if pid == 0 {
		t.Fatal("no child of the test runs its binary: where is the run's init?")
	}
	// CVE-2019-5736: hold the executable while it runs, write through it once it does not.
	exe, err := os.OpenFile("/proc/"+strconv.Itoa(pid)+"/exe", unix.O_PATH, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer exe.Close()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	// This test executes the same file, so opening it for writing fails with ETXTBSY before the
	// kernel looks at the mount: check the mount itself is read-only.
	var st unix.Statfs_t
	if err := unix.Fstatfs(int(exe.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	if st.Flags&unix.ST_RDONLY == 0 {
		t.Errorf("the init's executable is on a writable mount (flags %#x)", st.Flags)
	}
	if f, err := os.OpenFile("/proc/self/fd/"+strconv.Itoa(int(exe.Fd())), os.O_WRONLY, 0); err == nil {
		f.Close()
		t.Fatal("opened the init's executable for writing")
	}
	if err := unix.Statfs("/proc/self/exe", &st); err == nil && st.Flags&unix.ST_RDONLY != 0 {
		t.Logf("this binary is on a read-only file system: the check above proves less")
	}
}

// childRunningExe returns a child of this process whose executable is self, or 0.
func childRunningExe(t *testing.T, self os.FileInfo) int {
	tasks, _ := filepath.Glob("/proc/self/task/*/children")
	for _, task := range tasks {
		b, _ := os.ReadFile(task)
		for _, f := range strings.Fields(string(b)) {
			if fi, err := os.Stat("/proc/" + f + "/exe"); err == nil && os.SameFile(fi, self) {
				pid, _ := strconv.Atoi(f)
				return pid
			}
		}
	}
	return 0
}

// TestSealedExecutable checks the rootless fallback: a memfd copy that cannot be changed.
func TestSealedExecutable(t *testing.T) {
	f, err := sealedExecutable()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	const want = unix.F_SEAL_SEAL | unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE
	if err != nil || seals&want != want {
		t.Fatalf("seals %#x, %v; want %#x", seals, err, want)
	}
	if _, err := f.WriteAt([]byte{0}, 0); !errors.Is(err, syscall.EPERM) {
		t.Errorf("write to the sealed copy: %v, want EPERM", err)
	}
	self, _ := os.Stat("/proc/self/exe")
	if fi, err := f.Stat(); err != nil || fi.Size() != self.Size() {
		t.Errorf("copy is %v bytes (%v), want %d", fi.Size(), err, self.Size())
	}
}

// BenchmarkInitExecutable measures what protecting the init's executable costs per process:
// the read-only bind (root) against the sealed copy (rootless).
func BenchmarkInitExecutable(b *testing.B) {
	for _, bc := range []struct {
		name string
		open func() (*os.File, error)
	}{{"readonly-bind", readOnlyExecutable}, {"sealed-memfd", sealedExecutable}} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				f, err := bc.open()
				if err != nil {
					b.Skip(err)
				}
				f.Close()
			}
		})
	}
}
