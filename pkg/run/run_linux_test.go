package run

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// runOut runs spec in the test rootfs (unless spec says otherwise) and returns its stdout,
// stderr and error.
func runOut(t *testing.T, spec Spec) (string, string, error) {
	t.Helper()
	if spec.Rootfs == "" {
		spec.Rootfs = testRootfs(t)
	}
	if spec.StateDir == "" {
		spec.StateDir = t.TempDir()
	}
	var out, errb bytes.Buffer
	err := Run(t.Context(), spec, Stdio{Stdout: &out, Stderr: &errb})
	return out.String(), errb.String(), err
}

func sh(script string) []string { return []string{"sh", "-c", script} }

func TestRunExitCodes(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int // 0: success
		is   error
		msg  string
	}{
		{name: "zero", args: sh("exit 0")},
		{name: "one", args: sh("exit 1"), code: 1},
		{name: "42", args: []string{"rthelper", "exit", "42"}, code: 42},
		{name: "not found", args: []string{"nosuch"}, code: 127, is: ErrCommandNotFound,
			msg: `exec: "nosuch": executable file not found in $PATH`},
		{name: "absolute not found", args: []string{"/bin/nosuch"}, code: 127, is: ErrCommandNotFound},
		{name: "not executable", args: []string{"/etc/passwd"}, code: 126, is: ErrNotExecutable},
		{name: "directory", args: []string{"/bin"}, code: 126, is: ErrNotExecutable},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, err := runOut(t, Spec{Args: tc.args})
			if tc.code == 0 {
				if err != nil {
					t.Fatalf("err = %v (stderr %q)", err, stderr)
				}
				return
			}
			var ee *ExitError
			if !errors.As(err, &ee) || ee.Code != tc.code {
				t.Fatalf("err = %v, want exit code %d", err, tc.code)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("err = %v, want errors.Is %v", err, tc.is)
			}
			if tc.msg != "" && err.Error() != tc.msg {
				t.Errorf("message %q, want %q", err.Error(), tc.msg)
			}
		})
	}
}

func TestRunIsolation(t *testing.T) {
	danglingResolv := variantRootfs(t, func(dir string) {
		os.Symlink("../run/systemd/resolve/stub-resolv.conf", filepath.Join(dir, "etc/resolv.conf"))
	})
	tests := []struct {
		name string
		spec Spec
		want string // regexp for the whole output
	}{
		{"dangling /etc/resolv.conf", Spec{Rootfs: danglingResolv, Args: sh("cat /etc/resolv.conf")}, `^# imgrun`},
		{"pid 1 is imgrun's init", Spec{Args: sh("cat /proc/1/comm; echo $PPID")}, `^imgrun-init\n1\n$`},
		{"pid 1 without init", Spec{NoInit: true, Args: sh("echo $$")}, `^1\n$`},
		{"hostname", Spec{Args: []string{"hostname"}, Hostname: "box"}, `^box\n$`},
		{"default hostname", Spec{Args: sh("hostname; cat /etc/hostname")}, `^([0-9a-f]{12})\n([0-9a-f]{12})\n$`},
		{"only loopback", Spec{Args: sh("grep : /proc/net/dev | cut -d: -f1 | tr -d ' '")}, `^lo\n$`},
		{"only the run's processes", Spec{Args: sh("ls /proc | grep -E '^[0-9]+$'")}, `^1\n([0-9]+\n){1,3}$`}, // init, sh, ls (and grep unless ls was done first)
		{"pid 1 is the command without init", Spec{NoInit: true, Args: sh("readlink /proc/1/exe")}, `^/bin/busybox\n$`},
		{"no descriptor beyond stdio", Spec{Args: []string{"rthelper", "fds"}}, `^\[0 1 2\]\n$`},
		{"docker's capabilities", Spec{Args: sh("grep -E '^Cap(Eff|Bnd|Inh|Amb)' /proc/self/status")},
			`^CapInh:\t0{16}\nCapEff:\t00000000a80425fb\nCapBnd:\t00000000a80425fb\nCapAmb:\t0{16}\n$`},
		{"no new privileges", Spec{Args: sh("grep NoNewPrivs /proc/self/status")}, `^NoNewPrivs:\t1\n$`},
		{"non-root user has no capabilities", Spec{User: "app", Args: sh("grep CapEff /proc/self/status")}, `^CapEff:\t0{16}\n$`},
		{"root", Spec{Args: []string{"id"}}, `^uid=0\(root\) gid=0\(root\) groups=0\(root\)\n$`},
		{"named user with supplementary group", Spec{User: "app", Args: []string{"id"}},
			`^uid=1000\(app\) gid=1000\(app\) groups=1000\(app\),2000\(extra\)\n$`},
		{"numeric user and group", Spec{User: "1234:2000", Args: []string{"id"}}, `^uid=1234 gid=2000\(extra\) groups=2000\(extra\)\n$`},
		{"home and hostname from the user", Spec{User: "app", Hostname: "h", Args: sh("echo $HOME $HOSTNAME $PATH")},
			`^/home/app h ` + regexp.QuoteMeta(DefaultPath) + `\n$`},
		{"env", Spec{Env: []string{"A=1", "PATH=/bin"}, Args: []string{"env"}}, `^A=1\nPATH=/bin\nHOSTNAME=[0-9a-f]{12}\nHOME=/root\n$`},
		{"working dir created", Spec{Dir: "/work/new", Args: []string{"pwd"}}, `^/work/new\n$`},
		{"etc files", Spec{Hostname: "box", Args: sh("grep box /etc/hosts; cat /etc/resolv.conf")}, `^127.0.1.1\tbox\n# imgrun`},
		{"device node in the image is unusable", Spec{Args: sh("cat /mem 2>&1; head -c 3 /dev/zero | wc -c")}, `Permission denied\n3\n$`},
		{"cannot remount / or /proc", Spec{Args: sh("mount -o remount,rw /proc 2>/dev/null || echo no; mount -o remount,rw / 2>/dev/null || echo no")}, `^no\nno\n$`},
		{"kernel knobs read-only", Spec{Args: sh("echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null || echo ro")}, `^ro\n$`},
		{"tmp is a fresh tmpfs", Spec{Args: sh("grep ' /tmp ' /proc/self/mountinfo | grep -c tmpfs")}, `^1\n$`},
		{"own cgroup namespace", Spec{Args: sh("cut -d: -f3 /proc/self/cgroup | sort -u")}, `^/\n$`},
		{"seccomp", Spec{Args: []string{"rthelper", "sys"}},
			`^keyctl=1 bpf=1 userfaultfd=1 unshare-user=1 clone3=38 getppid=0 \n$`}, // EPERM, ENOSYS
		{"seccomp unconfined", Spec{Unconfined: true, Args: []string{"rthelper", "sys"}}, `^keyctl=22 bpf=22 `}, // EINVAL: reached the kernel
		{"no new user namespace", Spec{Args: sh("unshare -U true 2>/dev/null && echo made || echo denied")}, `^denied\n$`},
		{"new user namespace when unconfined", Spec{Unconfined: true, Args: sh("unshare -U true 2>/dev/null && echo made || echo denied")}, `^made\n$`},
		{"host network", Spec{Network: NetworkHost, Args: sh("grep -c : /proc/net/dev")}, `^[0-9]+\n$`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runOut(t, tc.spec)
			if err != nil {
				t.Fatalf("err = %v (stderr %q)", err, stderr)
			}
			if !regexp.MustCompile(tc.want).MatchString(out) {
				t.Fatalf("output %q does not match %q", out, tc.want)
			}
		})
	}
}

func TestRunSetupErrors(t *testing.T) {
	unsafeProc := variantRootfs(t, func(dir string) {
		os.Remove(filepath.Join(dir, "proc"))
		os.Symlink("/etc", filepath.Join(dir, "proc"))
	})
	passwdLink := variantRootfs(t, func(dir string) {
		os.Remove(filepath.Join(dir, "etc/passwd"))
		os.Symlink("/dev/zero", filepath.Join(dir, "etc/passwd"))
	})
	passwdFifo := variantRootfs(t, func(dir string) {
		os.Remove(filepath.Join(dir, "etc/group"))
		unix.Mkfifo(filepath.Join(dir, "etc/group"), 0o644)
	})
	tests := []struct {
		name string
		spec Spec
		is   error
	}{
		{"unknown user", Spec{User: "nosuch"}, ErrUnknownUser},
		{"unknown group", Spec{User: "app:nosuch"}, ErrUnknownUser},
		{"gid above int32", Spec{User: "405:2147483648"}, ErrUnknownUser},
		{"negative uid", Spec{User: "-1000"}, ErrUnknownUser},
		{"uid overflow", Spec{User: "4294967296"}, ErrUnknownUser},
		{"proc is a symlink", Spec{Rootfs: unsafeProc}, ErrUnsafeRootfs},
		{"passwd is a device", Spec{Rootfs: passwdLink, User: "app"}, ErrUnknownUser},
		{"group is a fifo", Spec{Rootfs: passwdFifo, User: "app"}, ErrUnknownUser},
		{"memory limit too low", Spec{Limits: Limits{MemoryBytes: 1 << 20}}, ErrLimitRejected},
		{"relative working dir", Spec{Dir: "work"}, ErrBadSpec},
		{"no command", Spec{Args: []string{}}, ErrNoCommand},
		{"rootfs inside the state dir", Spec{StateDir: os.TempDir()}, ErrBadSpec},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if tc.spec.Args == nil {
				tc.spec.Args = []string{"true"}
			}
			before := mountinfo(t)
			_, _, err := runOut(t, tc.spec)
			if !errors.Is(err, tc.is) {
				t.Fatalf("err = %v, want %v", err, tc.is)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error is not one line: %q", err)
			}
			if after := mountinfo(t); after != before {
				t.Errorf("mounts changed:\n%s\n---\n%s", before, after)
			}
		})
	}
}

// TestRunWrites checks that writes land in the run's writable layer, never in the rootfs, and
// that --keep keeps that layer and --read-only refuses them.
func TestRunWrites(t *testing.T) {
	rootfs := testRootfs(t)
	before := treeHash(t, rootfs)
	script := "echo x > /etc/newfile && rm /bin/ls && echo y >> /etc/passwd && mkdir -p /a/b && echo ok"
	out, stderr, err := runOut(t, Spec{Args: sh(script)})
	if err != nil || out != "ok\n" {
		t.Fatalf("run: %v %q %q", err, out, stderr)
	}
	if after := treeHash(t, rootfs); after != before {
		t.Fatal("the run changed the rootfs")
	}

	keep := filepath.Join(t.TempDir(), "keep")
	if _, stderr, err := runOut(t, Spec{Args: sh("echo kept > /etc/newfile"), KeepDir: keep}); err != nil {
		t.Fatalf("run with KeepDir: %v %q", err, stderr)
	}
	if b, err := os.ReadFile(filepath.Join(keep, "upper/etc/newfile")); err != nil || string(b) != "kept\n" {
		t.Fatalf("kept layer: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(keep, "work")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("overlay work dir left in KeepDir: %v", err)
	}

	out, stderr, err = runOut(t, Spec{ReadOnly: true, Dir: "/root",
		Args: sh("touch /x 2>/dev/null || echo ro; touch /tmp/x && echo tmp; pwd")})
	if err != nil || out != "ro\ntmp\n/root\n" {
		t.Fatalf("read-only run: %v %q %q", err, out, stderr)
	}
	if after := treeHash(t, rootfs); after != before {
		t.Fatal("a run changed the rootfs")
	}
}

func TestRunBindMounts(t *testing.T) {
	host := t.TempDir()
	os.WriteFile(filepath.Join(host, "f"), []byte("from host\n"), 0o644)
	rw := t.TempDir()
	spec := Spec{
		Mounts: []Mount{{Source: host, Target: "/data", ReadOnly: true}, {Source: rw, Target: "/new/rw"}},
		Args:   sh("cat /data/f; touch /data/x 2>/dev/null || echo ro; echo w > /new/rw/out"),
	}
	out, stderr, err := runOut(t, spec)
	if err != nil || out != "from host\nro\n" {
		t.Fatalf("run: %v %q %q", err, out, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(rw, "out")); string(b) != "w\n" {
		t.Fatalf("write through rw bind: %q", b)
	}
}

// TestRunNoLeftovers checks that nothing of a run outlives it: no process (a daemon that
// double-forks is killed with the PID namespace), no mount, no run directory, no cgroup.
func TestRunNoLeftovers(t *testing.T) {
	state := t.TempDir()
	mounts := mountinfo(t)
	cgroups := cgroupChildren(t)
	marker := "987654"
	out, stderr, err := runOut(t, Spec{StateDir: state, Stats: true, Limits: Limits{PidsLimit: 100},
		Args: sh("(sleep " + marker + " &) ; sleep " + marker + " & echo started")})
	if err != nil || out != "started\n" {
		t.Fatalf("run: %v %q %q", err, out, stderr)
	}
	if pids := findProcs(t, "sleep\x00"+marker); len(pids) > 0 {
		t.Errorf("processes of the run survived it: %v", pids)
	}
	if after := mountinfo(t); after != mounts {
		t.Errorf("mounts changed:\n%s\n---\n%s", mounts, after)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Errorf("files left in the state dir: %v", ents)
	}
	if after := cgroupChildren(t); after != cgroups {
		t.Errorf("cgroups changed: %q -> %q", cgroups, after)
	}
}

func TestRunLimits(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		_, _, err := runOut(t, Spec{Args: []string{"rthelper", "alloc"}, Limits: Limits{MemoryBytes: 32 << 20}})
		if errors.Is(err, ErrControllerMissing) {
			t.Skipf("no memory controller: %v", err)
		}
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 137 || !ee.OOMKilled || !errors.Is(err, ErrOOMKilled) {
			t.Fatalf("err = %v, want an OOM kill with exit code 137", err)
		}
	})
	t.Run("pids", func(t *testing.T) {
		out, _, err := runOut(t, Spec{Args: []string{"rthelper", "fork", "200"}, Limits: Limits{PidsLimit: 20}})
		if errors.Is(err, ErrControllerMissing) {
			t.Skipf("no pids controller: %v", err)
		}
		var ee *ExitError
		if !errors.As(err, &ee) || ee.Code != 3 {
			t.Fatalf("err = %v (out %q), want the fork loop stopped (exit 3)", err, out)
		}
	})
	t.Run("stats", func(t *testing.T) {
		spec := Spec{Rootfs: testRootfs(t), StateDir: t.TempDir(), Stats: true, Args: sh("i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done")}
		st, err := RunStats(t.Context(), spec, Stdio{})
		if errors.Is(err, ErrControllerMissing) {
			t.Skipf("no cgroup controller: %v", err)
		}
		if err != nil || st == nil || st.MemoryPeakBytes == 0 || st.CPUTotalNanos == 0 {
			t.Fatalf("stats %+v, err %v", st, err)
		}
	})
}

// TestRunSignals checks that a signal sent to imgrun reaches the command (exit 143 from its
// SIGTERM handler) and that cancelling ctx stops the command as docker stop does: SIGTERM
// (which kills a command that does not handle it, unless it is PID 1 itself), then SIGKILL.
func TestRunSignals(t *testing.T) {
	rootfs := testRootfs(t)
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() {
		errc <- Run(t.Context(), Spec{Rootfs: rootfs, StateDir: t.TempDir(), Args: []string{"rthelper", "sigterm"}}, Stdio{Stdout: pw})
		pw.Close()
	}()
	line := make([]byte, 6)
	if _, err := io.ReadFull(pr, line); err != nil || string(line) != "ready\n" {
		t.Fatalf("helper: %q %v", line, err)
	}
	go io.Copy(io.Discard, pr)
	syscall.Kill(os.Getpid(), syscall.SIGTERM) // Run forwards it instead of letting it kill us
	var ee *ExitError
	if err := <-errc; !errors.As(err, &ee) || ee.Code != 143 {
		t.Fatalf("err = %v, want exit code 143", err)
	}

	stops := []struct {
		name   string
		args   []string
		noInit bool
		sig    syscall.Signal
	}{
		{name: "default action", args: []string{"sleep", "60"}, sig: syscall.SIGTERM},
		{name: "ignored", args: sh(`trap "" TERM; sleep 60`), sig: syscall.SIGKILL},
		{name: "PID 1 without handler", args: []string{"sleep", "60"}, noInit: true, sig: syscall.SIGKILL},
	}
	for _, tc := range stops {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(t.Context())
			go func() { time.Sleep(300 * time.Millisecond); cancel() }()
			spec := Spec{Rootfs: rootfs, StateDir: t.TempDir(), Args: tc.args, NoInit: tc.noInit, StopTimeout: 200 * time.Millisecond}
			err := Run(ctx, spec, Stdio{})
			if !errors.As(err, &ee) || ee.Code != 128+int(tc.sig) || ee.Signal != tc.sig {
				t.Fatalf("cancelled run: err = %v, want %v (%d)", err, tc.sig, 128+int(tc.sig))
			}
		})
	}
}

func TestRunStdin(t *testing.T) {
	rootfs := testRootfs(t)
	for _, tc := range []struct {
		stdin bool
		want  string
	}{{true, "from the caller\n"}, {false, ""}} { // without -i, stdin is /dev/null
		var out bytes.Buffer
		spec := Spec{Rootfs: rootfs, StateDir: t.TempDir(), Stdin: tc.stdin, Args: []string{"cat"}}
		if err := Run(t.Context(), spec, Stdio{Stdin: strings.NewReader("from the caller\n"), Stdout: &out}); err != nil {
			t.Fatal(err)
		}
		if out.String() != tc.want {
			t.Errorf("Stdin %v: output %q, want %q", tc.stdin, out.String(), tc.want)
		}
	}
}

// TestRunNoControllingTerminal gives a run the caller's terminal as stdin without TTY: the
// command must not have it as controlling terminal (TIOCSTI injection, D6).
func TestRunNoControllingTerminal(t *testing.T) {
	rootfs := testRootfs(t)
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer master.Close()
	unix.IoctlSetPointerInt(int(master.Fd()), unix.TIOCSPTLCK, 0)
	n, err := unix.IoctlGetUint32(int(master.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer slave.Close()
	var out bytes.Buffer
	spec := Spec{Rootfs: rootfs, StateDir: t.TempDir(), Stdin: true,
		Args: sh("test -t 0 && echo stdin is a terminal; cut -d' ' -f7 /proc/self/stat; cut -d' ' -f6 /proc/self/stat")}
	if err := Run(t.Context(), spec, Stdio{Stdin: slave, Stdout: &out}); err != nil {
		t.Fatal(err)
	}
	// tty_nr 0: no controlling terminal; session id 1: the run's own session, led by its init.
	if want := "stdin is a terminal\n0\n1\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
}

func TestRunTTY(t *testing.T) {
	var out bytes.Buffer
	spec := Spec{Rootfs: testRootfs(t), StateDir: t.TempDir(), TTY: true, Args: sh("test -t 0 && test -t 1 && echo tty $TERM; readlink /proc/self/fd/0")}
	if err := Run(t.Context(), spec, Stdio{Stdout: &out}); err != nil {
		t.Fatalf("run: %v", err)
	}
	if !strings.HasPrefix(out.String(), "tty xterm\r\n") {
		t.Fatalf("output %q", out.String())
	}
}

// TestRunTTYInterrupt types Ctrl-C on the run's terminal: the command, in the terminal's
// foreground process group (not the init's), gets SIGINT and dies of it (130), as with
// docker run -it --init.
func TestRunTTYInterrupt(t *testing.T) {
	inR, inW := io.Pipe()
	outR, outW := io.Pipe()
	spec := Spec{Rootfs: testRootfs(t), StateDir: t.TempDir(), TTY: true, Stdin: true,
		Args: sh("echo ready; exec sleep 10")}
	errc := make(chan error, 1)
	go func() { errc <- Run(t.Context(), spec, Stdio{Stdin: inR, Stdout: outW}); outW.Close() }()
	line := make([]byte, 5)
	if _, err := io.ReadFull(outR, line); err != nil || string(line) != "ready" {
		t.Fatalf("output %q, %v", line, err)
	}
	go io.Copy(io.Discard, outR)
	time.Sleep(100 * time.Millisecond) // let sh exec sleep
	inW.Write([]byte{3})               // ^C
	var ee *ExitError
	if err := <-errc; !errors.As(err, &ee) || ee.Code != 130 || ee.Signal != syscall.SIGINT {
		t.Fatalf("err = %v, want SIGINT (130)", err)
	}
}

// TestRunRootless runs the test binary as nobody (uid 65534): the run gets a user namespace
// mapping that user to root.
func TestRunRootless(t *testing.T) {
	rootfs := testRootfs(t)
	setpriv := "/usr/bin/setpriv"
	if _, err := os.Stat(setpriv); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	// As after a rootless unpack, the user owns the rootfs (and so is its root inside).
	userRootfs := filepath.Join(dir, "rootfs")
	if out, err := execCommand("cp", "-a", rootfs, userRootfs).CombinedOutput(); err != nil {
		t.Fatalf("copy rootfs: %v %s", err, out)
	}
	os.Remove(filepath.Join(userRootfs, "mem"))
	if out, err := execCommand("chown", "-R", "65534:65534", userRootfs).CombinedOutput(); err != nil {
		t.Fatalf("chown rootfs: %v %s", err, out)
	}
	rootfs = userRootfs
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "run.test")
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	state := filepath.Join(dir, "state")
	cmd := execCommand(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", bin,
		"-test.run", "^TestRootlessChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IMGRUN_TEST_ROOTLESS="+rootfs+":"+state)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("rootless run: %v\n%s", err, out)
	}
	if strings.Contains(string(out), "SKIP") || !strings.Contains(string(out), "PASS") {
		t.Fatalf("rootless child did not run:\n%s", out)
	}
}

// TestRootlessChild is TestRunRootless's child, run as an unprivileged user.
func TestRootlessChild(t *testing.T) {
	arg := os.Getenv("IMGRUN_TEST_ROOTLESS")
	if arg == "" {
		t.Skip("run by TestRunRootless")
	}
	rootfs, state, _ := strings.Cut(arg, ":")
	var out, errb bytes.Buffer
	spec := Spec{Rootfs: rootfs, StateDir: state, Hostname: "rootless",
		Args: sh("id -u; cat /proc/1/comm; hostname; echo x > /etc/new && cat /etc/new; grep -c : /proc/net/dev")}
	if err := Run(t.Context(), spec, Stdio{Stdout: &out, Stderr: &errb}); err != nil {
		t.Fatalf("run: %v (stderr %q)", err, errb.String())
	}
	if want := "0\nimgrun-init\nrootless\nx\n1\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
	_, err := RunStats(t.Context(), Spec{Rootfs: rootfs, StateDir: state, User: "app", Args: []string{"true"}}, Stdio{})
	if !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("rootless run as app: %v, want ErrUnknownUser (not mapped)", err)
	}
	errb.Reset()
	err = Run(t.Context(), Spec{Rootfs: rootfs, StateDir: state, Limits: Limits{PidsLimit: 10}, Args: []string{"true"}}, Stdio{Stderr: &errb})
	if err != nil || !strings.Contains(errb.String(), "warning") {
		t.Fatalf("rootless limits: err %v, stderr %q (want a warning)", err, errb.String())
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("run dirs left: %v", ents)
	}
}

func mountinfo(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// cgroupChildren lists the run cgroups under every imgrun parent.
func cgroupChildren(t *testing.T) string {
	t.Helper()
	dirs, _ := filepath.Glob("/sys/fs/cgroup/*/imgrun/*")
	more, _ := filepath.Glob("/sys/fs/cgroup/imgrun/*")
	var names []string
	for _, d := range append(dirs, more...) {
		if fi, err := os.Stat(d); err == nil && fi.IsDir() {
			names = append(names, d)
		}
	}
	return strings.Join(names, "\n")
}

// findProcs returns the host pids whose command line starts with prefix.
func findProcs(t *testing.T, prefix string) []string {
	t.Helper()
	var pids []string
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline"); err == nil && strings.HasPrefix(string(b), prefix) {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// treeHash hashes every path, mode, owner, size, link target and file content under dir.
func treeHash(t *testing.T, dir string) string {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %o %d:%d %d %d\n", p, st.Mode, st.Uid, st.Gid, st.Size, st.Rdev)
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			l, _ := os.Readlink(p)
			fmt.Fprintln(h, l)
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			io.Copy(h, f)
			f.Close()
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// TestRunStateDirOnOverlay puts the state dir on an overlayfs (imgrun itself running in a
// container): the run's tmpfs and overlay go on top of it as usual.
func TestRunStateDirOnOverlay(t *testing.T) {
	rootfs := testRootfs(t)
	base := t.TempDir()
	for _, d := range []string{"lower", "upper", "work", "state"} {
		os.Mkdir(filepath.Join(base, d), 0o755)
	}
	state := filepath.Join(base, "state")
	opts := "lowerdir=" + base + "/lower,upperdir=" + base + "/upper,workdir=" + base + "/work"
	if err := unix.Mount("overlay", state, "overlay", 0, opts); err != nil {
		t.Skipf("cannot mount an overlay: %v", err)
	}
	t.Cleanup(func() { unix.Unmount(state, unix.MNT_DETACH) })
	before := treeHash(t, rootfs)
	out, stderr, err := runOut(t, Spec{StateDir: state, Args: sh("echo x > /f && cat /f && grep ' / ' /proc/self/mountinfo | grep -c 'overlay.*volatile'")})
	if err != nil || out != "x\n1\n" {
		t.Fatalf("run: %v %q %q", err, out, stderr)
	}
	if treeHash(t, rootfs) != before {
		t.Fatal("the run changed the rootfs")
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("run dir left: %v", ents)
	}
}

// TestRunKilledLauncher SIGKILLs a process in the middle of Run: the run dies with it (parent
// death signal) and leaves no process, mount or file behind.
func TestRunKilledLauncher(t *testing.T) {
	rootfs := testRootfs(t)
	state := t.TempDir()
	mounts := mountinfo(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := execCommand(self, "-test.run", "^TestKilledLauncherChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), "IMGRUN_TEST_KILLED="+rootfs+":"+state)
	stdout, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	line := make([]byte, 3)
	if _, err := io.ReadFull(stdout, line); err != nil || string(line) != "up\n" {
		cmd.Process.Kill()
		cmd.Wait()
		t.Fatalf("child: %q %v", line, err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	deadline := time.Now().Add(5 * time.Second)
	for len(findProcs(t, "sleep\x00987655")) > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the run outlived its killed launcher")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if ents, _ := os.ReadDir(state); len(ents) != 0 {
		t.Fatalf("the killed run left %v in its state dir", ents)
	}
	if after := mountinfo(t); after != mounts {
		t.Errorf("mounts changed:\n%s\n---\n%s", mounts, after)
	}
}

// TestKilledLauncherChild is TestRunKilledLauncher's victim.
func TestKilledLauncherChild(t *testing.T) {
	arg := os.Getenv("IMGRUN_TEST_KILLED")
	if arg == "" {
		t.Skip("run by TestRunKilledLauncher")
	}
	rootfs, state, _ := strings.Cut(arg, ":")
	Run(t.Context(), Spec{Rootfs: rootfs, StateDir: state, Args: sh("echo up; sleep 987655")}, Stdio{Stdout: os.Stdout})
	t.Fatal("survived")
}
