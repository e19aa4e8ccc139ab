package run

import (
	"bufio"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/testutil"
)

// cgHelperSrc is a static program the cgroup tests run inside cgroups. It waits for one line on
// stdin (so the test can move it into a cgroup first), then does what its arguments say and
// reports on stdout.
const cgHelperSrc = `package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"
)

func main() {
	bufio.NewReader(os.Stdin).ReadString('\n')
	switch os.Args[1] {
	case "sleep":
		time.Sleep(time.Hour)
	case "spin":
		for {
		}
	case "alloc": // alloc MiB: touch MiB mebibytes, then report
		n, _ := strconv.Atoi(os.Args[2])
		var keep [][]byte
		for i := 0; i < n; i++ {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = byte(j)
			}
			keep = append(keep, b)
		}
		fmt.Println("allocated", len(keep))
	case "open": // open PATH: "ok" or the errno's name
		f, err := os.Open(os.Args[2])
		if err == nil {
			f.Close()
			fmt.Println("ok")
			return
		}
		var errno syscall.Errno
		if errors.As(err, &errno) && errno == syscall.EPERM {
			fmt.Println("EPERM")
			return
		}
		fmt.Println(err)
	case "fork": // fork N: start N sleeping children, report how many started and the first error
		n, _ := strconv.Atoi(os.Args[2])
		started := 0
		var ferr error
		for i := 0; i < n; i++ {
			c := exec.Command("/bin/sleep", "3600")
			if err := c.Start(); err != nil {
				ferr = err
				break
			}
			started++
		}
		eagain := errors.Is(ferr, syscall.EAGAIN)
		fmt.Println(started, eagain)
		os.Stdout.Close()
		time.Sleep(time.Hour)
	case "spawn": // keep forking children that fork, forever
		fmt.Println("spawning")
		for {
			c := exec.Command(os.Args[0], "spawn-child")
			if c.Start() == nil {
				go c.Wait()
			}
			time.Sleep(time.Millisecond)
		}
	case "spawn-child":
		c := exec.Command("/bin/sleep", "3600")
		c.Start()
		time.Sleep(time.Hour)
	}
}
`

// cgHelper is a running helper process: gated on stdin until release.
type cgHelper struct {
	cmd   *exec.Cmd
	gate  io.WriteCloser
	out   *bufio.Reader
	waitc chan error
}

// startCgHelper starts the helper with args; attr, when set, is its SysProcAttr (e.g. UseCgroupFD).
func startCgHelper(t testing.TB, attr *syscall.SysProcAttr, args ...string) *cgHelper {
	t.Helper()
	bin := testutil.BuildGo(t, "cghelper", cgHelperSrc)
	cmd := exec.Command(bin, args...)
	cmd.Env = []string{"GOMAXPROCS=1"}
	cmd.SysProcAttr = attr
	cmd.Stderr = os.Stderr
	gate, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper: %v", err)
	}
	h := &cgHelper{cmd: cmd, gate: gate, out: bufio.NewReader(out), waitc: make(chan error, 1)}
	t.Cleanup(func() {
		cmd.Process.Kill()
		h.wait()
	})
	return h
}

// release lets the helper go on with its job.
func (h *cgHelper) release(t testing.TB) {
	t.Helper()
	if _, err := h.gate.Write([]byte("go\n")); err != nil {
		t.Fatalf("release helper: %v", err)
	}
}

// line reads one line of the helper's output.
func (h *cgHelper) line(t testing.TB) string {
	t.Helper()
	s, err := h.out.ReadString('\n')
	if err != nil {
		t.Fatalf("read helper output: %v (got %q)", err, s)
	}
	return strings.TrimSpace(s)
}

// wait reaps the helper (once) and returns how it ended.
func (h *cgHelper) wait() error {
	select {
	case err := <-h.waitc:
		h.waitc <- err
		return err
	default:
	}
	io.Copy(io.Discard, h.out)
	err := h.cmd.Wait()
	h.waitc <- err
	return err
}

// killedBy reports whether err says the process was killed by sig.
func killedBy(err error, sig syscall.Signal) bool {
	var ee *exec.ExitError
	if !errors.As(err, &ee) {
		return false
	}
	ws, ok := ee.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == sig
}

// cgNeedV1 skips unless this host has cgroup v1 controllers and we are root.
func cgNeedV1(t *testing.T) *mounts {
	t.Helper()
	testutil.RequiresRoot(t)
	m, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	if len(m.v1) == 0 {
		testutil.SkipOrFail(t, "no cgroup v1 controllers mounted")
	}
	return m
}

// cgNeedV2 skips unless a cgroup2 hierarchy is mounted and we are root.
func cgNeedV2(t *testing.T) *mounts {
	t.Helper()
	testutil.RequiresRoot(t)
	m, err := cgroupMounts()
	if err != nil {
		t.Fatal(err)
	}
	if m.unified == "" {
		testutil.SkipOrFail(t, "no cgroup2 file system mounted")
	}
	return m
}

// forceCgroup makes newCgroup pick version v for the rest of the test.
func forceCgroup(t *testing.T, v string) {
	old := cgroupVersion
	cgroupVersion = v
	t.Cleanup(func() { cgroupVersion = old })
}

// cgID is a run id unique to this test.
func cgID(t *testing.T) string {
	return "test-" + strconv.Itoa(os.Getpid()) + "-" + strings.NewReplacer("/", "-", " ", "_").Replace(t.Name())
}

// newTestCgroup creates a cgroup that is closed when the test ends.
func newTestCgroup(t *testing.T, id string, l Limits) cgroup {
	t.Helper()
	cg, err := newCgroup(id, l)
	if err != nil {
		t.Fatalf("newCgroup: %v", err)
	}
	t.Cleanup(func() {
		if err := cg.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return cg
}

// procsOf reads a cgroup's member pids, failing the test on error.
func procsOf(t *testing.T, dir string) []int {
	t.Helper()
	p, err := readPids(dir)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// waitFor polls cond until it holds, failing after a generous bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// cpuTicks is utime+stime of pid from /proc/PID/stat.
func cpuTicks(t *testing.T, pid int) uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "stat"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	u, _ := strconv.ParseUint(f[11], 10, 64)
	k, _ := strconv.ParseUint(f[12], 10, 64)
	return u + k
}

// mknodDev makes a character device node major:minor in a temp dir on a file system that allows
// devices, and checks that this test process, outside any device-limited cgroup, is not refused
// with EPERM when it opens it (it may get ENXIO when the kernel lacks the driver, as for 1:1 here):
// so an EPERM later comes from the cgroup.
func mknodDev(t *testing.T, major, minor int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "dev")
	if err := syscall.Mknod(p, syscall.S_IFCHR|0o600, major<<8|minor); err != nil {
		t.Fatalf("mknod: %v", err)
	}
	f, err := os.Open(p)
	if errors.Is(err, syscall.EPERM) || errors.Is(err, syscall.EACCES) {
		testutil.SkipOrFail(t, "cannot open a device node in %s even outside the cgroup (nodev?): %v", p, err)
	}
	if err == nil {
		f.Close()
	}
	return p
}
