package run

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"github.com/imgrun/imgrun/internal/testutil"
	"golang.org/x/sys/unix"
)

// rtHelperSrc is a static program placed in the test rootfs as /bin/rthelper.
const rtHelperSrc = `package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"sort"
	"strconv"
	"syscall"
	"time"
)

func main() {
	switch os.Args[1] {
	case "exit":
		n, _ := strconv.Atoi(os.Args[2])
		os.Exit(n)
	case "fds": // the open descriptors, read with raw system calls (the Go runtime's own
		// epoll descriptors appear only with the first os.File it polls)
		dfd, err := syscall.Open("/proc/self/fd", syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		buf := make([]byte, 4096)
		n, _ := syscall.ReadDirent(dfd, buf)
		var names []string
		_, _, names = syscall.ParseDirent(buf[:n], -1, names)
		var fds []int
		for _, n := range names {
			if fd, _ := strconv.Atoi(n); fd != dfd {
				fds = append(fds, fd)
			}
		}
		sort.Ints(fds)
		fmt.Println(fds)
	case "alloc": // touch memory until killed
		var keep [][]byte
		for {
			b := make([]byte, 1<<20)
			for j := range b {
				b[j] = 1
			}
			keep = append(keep, b)
		}
	case "fork": // start up to N sleepers; exit 3 when the kernel refuses one
		n, _ := strconv.Atoi(os.Args[2])
		for i := 0; i < n; i++ {
			if err := exec.Command("/bin/sleep", "60").Start(); err != nil {
				fmt.Println("started", i, "then:", err)
				os.Exit(3)
			}
		}
		fmt.Println("started", n)
	case "sigterm": // exit 143 on SIGTERM
		c := make(chan os.Signal, 1)
		signal.Notify(c, syscall.SIGTERM)
		fmt.Println("ready")
		<-c
		os.Exit(143)
	case "sys": // try syscalls the seccomp filter refuses (amd64 numbers), and one it allows
		calls := []struct {
			name string
			nr   uintptr
			arg  uintptr
		}{{"keyctl", 250, 0}, {"bpf", 321, 0}, {"userfaultfd", 323, 0}, {"unshare-user", 272, syscall.CLONE_NEWUSER},
			{"clone3", 435, 0}, {"getppid", 110, 0}}
		for _, c := range calls {
			_, _, errno := syscall.RawSyscall(c.nr, c.arg, 0, 0)
			fmt.Printf("%s=%d ", c.name, int(errno))
		}
		fmt.Println()
	case "zombies": // orphan a process, let it exit, then count the zombies in /proc
		exec.Command("/bin/sh", "-c", "/bin/sleep 0.05 &").Run()
		time.Sleep(500 * time.Millisecond)
		n := 0
		ents, _ := os.ReadDir("/proc")
		for _, e := range ents {
			b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
			if i := bytes.LastIndexByte(b, ')'); err == nil && i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
				n++
			}
		}
		fmt.Println("zombies", n)
	case "openw": // open PATH for writing: "ok" or the error
		f, err := os.OpenFile(os.Args[2], os.O_WRONLY, 0)
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		f.Close()
		fmt.Println("ok")
	case "escape": // the classic chroot escape, then report whether PATH exists
		dir, err := os.MkdirTemp("", "escape")
		if err == nil {
			err = syscall.Chroot(dir)
		}
		for i := 0; err == nil && i < 64; i++ {
			err = syscall.Chdir("..")
		}
		if err == nil {
			err = syscall.Chroot(".")
		}
		_, serr := os.Stat(os.Args[2])
		fmt.Println("escape:", err, "found:", serr == nil)
	case "open": // open PATH for reading: "ok" or the error
		f, err := os.Open(os.Args[2])
		if err != nil {
			fmt.Println(err)
			os.Exit(1)
		}
		b := make([]byte, 1)
		_, err = f.Read(b)
		fmt.Println("ok", err)
	}
}
`

var busyboxApplets = []string{"sh", "ls", "cat", "hostname", "id", "sleep", "echo", "true", "false",
	"touch", "rm", "mkdir", "pwd", "grep", "readlink", "mount", "env", "test", "head", "kill", "wc", "tty"}

var (
	testRootfsOnce sync.Once
	testRootfsDir  string
	testRootfsErr  error
)

// testRootfs returns a shared busybox rootfs (Debian's busybox-static) with /bin/rthelper, a
// passwd/group with users root, nobody and app (uid 1000, also in group extra 2000), and a
// char device 1:1 (like /dev/mem) at /mem. Runs never modify it (TestRootfsUnchanged).
func testRootfs(t *testing.T) string {
	t.Helper()
	testutil.RequiresRoot(t)
	bb := "/bin/busybox"
	if _, err := os.Stat(bb); err != nil {
		testutil.SkipOrFail(t, "busybox not found: apt-get install busybox-static")
	}
	helper := testutil.BuildGo(t, "rthelper", rtHelperSrc)
	testRootfsOnce.Do(func() { testRootfsDir, testRootfsErr = makeRootfs(bb, helper) })
	if testRootfsErr != nil {
		t.Fatal(testRootfsErr)
	}
	return testRootfsDir
}

func makeRootfs(busybox, helper string) (string, error) {
	dir, err := os.MkdirTemp("", "imgrun-rootfs-")
	if err != nil {
		return "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return "", err
	}
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "home/app"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			return "", err
		}
	}
	copies := map[string]string{busybox: "bin/busybox", helper: "bin/rthelper"}
	for src, dst := range copies {
		if out, err := exec.Command("cp", src, filepath.Join(dir, dst)).CombinedOutput(); err != nil {
			return "", &os.PathError{Op: "cp " + string(out), Path: src, Err: err}
		}
	}
	for _, a := range busyboxApplets {
		if err := os.Symlink("busybox", filepath.Join(dir, "bin", a)); err != nil {
			return "", err
		}
	}
	files := map[string]string{
		"etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000:app:/home/app:/bin/sh\n",
		"etc/group":  "root:x:0:\nnogroup:x:65534:\napp:x:1000:\nextra:x:2000:app\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			return "", err
		}
	}
	if err := unix.Mknod(filepath.Join(dir, "mem"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 1))); err != nil {
		return "", err
	}
	return dir, nil
}

func cleanupTestRootfs() {
	if testRootfsDir != "" {
		os.RemoveAll(testRootfsDir)
	}
}

// variantRootfs is a copy of the test rootfs (hard links: nothing may write to either) changed
// by edit.
func variantRootfs(t *testing.T, edit func(dir string)) string {
	t.Helper()
	base := testRootfs(t)
	dir := filepath.Join(t.TempDir(), "rootfs")
	if out, err := exec.Command("cp", "-a", "--link", base, dir).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v: %s", err, out)
	}
	edit(dir)
	return dir
}

func execCommand(name string, args ...string) *exec.Cmd { return exec.Command(name, args...) }
