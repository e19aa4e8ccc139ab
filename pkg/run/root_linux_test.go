package run

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// unreachable is a script that looks for the host file marker from inside a run, by every
// path that could lead out of the run's root, then tries the classic chroot escape (as root,
// with CAP_SYS_CHROOT) twice: for the marker, and for a file of the run's root.
func unreachable(marker string) []string {
	return sh(`for p in ` + marker + ` /..` + marker + ` /../../..` + marker + ` /proc/1/root` + marker +
		` /proc/self/root` + marker + ` /proc/self/cwd/../../..` + marker + `; do test -e $p && echo reached $p; done
rthelper escape ` + marker + `; rthelper escape /bin/rthelper`)
}

// unreachableOut is what unreachable prints when the run is contained: the escape chroots but
// ends in the run's own root.
const unreachableOut = "escape: <nil> found: false\nescape: <nil> found: true\n"

func hostMarker(t *testing.T, dir string) string {
	t.Helper()
	marker := filepath.Join(dir, "imgrun-host-marker")
	if err := os.WriteFile(marker, []byte("host\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return marker
}

func TestRunNoPivot(t *testing.T) {
	rootfs := testRootfs(t)
	marker := hostMarker(t, t.TempDir())
	tree := treeHash(t, rootfs)
	mounts := mountinfo(t)
	tests := []struct {
		name    string
		noPivot bool
		args    []string
		code    int
		want    string // regexp for the whole output
	}{
		{name: "exit code", noPivot: true, args: []string{"rthelper", "exit", "42"}, code: 42},
		{name: "proc of the run", noPivot: true, args: sh("cat /proc/1/comm; ls /proc | grep -E '^[0-9]+$' | head -1"), want: `^imgrun-init\n1\n$`},
		{name: "hostname", noPivot: true, args: []string{"hostname"}, want: `^np\n$`},
		{name: "writes stay in the run", noPivot: true, args: sh("echo x > /etc/new && rm /etc/passwd && cat /etc/new"), want: `^x\n$`},
		{name: "docker's capabilities", noPivot: true, args: sh("grep CapBnd /proc/self/status"), want: `^CapBnd:\t00000000a80425fb\n$`},
		{name: "host root unreachable", noPivot: true, args: unreachable(marker), want: "^" + unreachableOut + "$"},
		{name: "host root unreachable with pivot_root", args: unreachable(marker), want: "^" + unreachableOut + "$"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out, stderr, err := runOut(t, Spec{NoPivot: tc.noPivot, Hostname: "np", Args: tc.args})
			var ee *ExitError
			switch {
			case tc.code == 0 && err != nil:
				t.Fatalf("err = %v (stderr %q)", err, stderr)
			case tc.code != 0 && (!errors.As(err, &ee) || ee.Code != tc.code):
				t.Fatalf("err = %v, want exit code %d (stderr %q)", err, tc.code, stderr)
			}
			if !regexp.MustCompile(tc.want).MatchString(out) {
				t.Fatalf("output %q does not match %q", out, tc.want)
			}
		})
	}
	// The host's mounts stay in the namespace, under the run's root, but out of sight.
	table := sh("cut -d' ' -f4,5 /proc/self/mountinfo") // root and mount point
	pivoted, _, err := runOut(t, Spec{Args: table})
	if err != nil {
		t.Fatal(err)
	}
	moved, _, err := runOut(t, Spec{NoPivot: true, Args: table})
	if err != nil {
		t.Fatal(err)
	}
	if moved != pivoted {
		t.Errorf("mount table with NoPivot:\n%s\nwith pivot_root:\n%s", moved, pivoted)
	}
	if after := treeHash(t, rootfs); after != tree {
		t.Error("the runs changed the rootfs")
	}
	if after := mountinfo(t); after != mounts {
		t.Errorf("mounts changed:\n%s\n---\n%s", mounts, after)
	}
}

// TestEscapeHelper shows that rthelper's escape gets out of a plain chroot, so that its
// failing inside a run means something.
func TestEscapeHelper(t *testing.T) {
	dir := variantRootfs(t, func(string) {})
	marker := hostMarker(t, t.TempDir())
	cmd := exec.Command("/bin/rthelper", "escape", marker)
	cmd.Env = []string{"TMPDIR=/tmp"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	out, err := cmd.CombinedOutput()
	if err != nil || string(out) != "escape: <nil> found: true\n" {
		t.Fatalf("escape from a plain chroot: %v %q", err, out)
	}
}

// TestRunInChroot runs the launcher (this test binary) inside a chroot whose root is a plain
// directory of a shared mount: "/" is no mount point there, and a mount made by the run that
// propagated to the host would show in the host's mount table.
func TestRunInChroot(t *testing.T) {
	rootfs := testRootfs(t)
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	shared := t.TempDir()
	if err := unix.Mount(shared, shared, "", unix.MS_BIND, ""); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Unmount(shared, unix.MNT_DETACH) })
	if err := unix.Mount("", shared, "", unix.MS_SHARED, ""); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(shared, "chroot")
	// The test binary may be linked dynamically: /usr and the /lib links as on the host.
	for _, d := range []string{"proc", "dev", "usr", "rootfs", "state", "bin", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, l := range []string{"lib", "lib64"} {
		if target, err := os.Readlink("/" + l); err == nil {
			os.Symlink(target, filepath.Join(dir, l))
		}
	}
	binds := map[string]string{"/proc": "proc", "/dev": "dev", "/usr": "usr", rootfs: "rootfs"}
	for src, dst := range binds {
		if err := unix.Mount(src, filepath.Join(dir, dst), "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := copyFile(self, filepath.Join(dir, "bin/imgrun.test")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "bin/imgrun.test"), 0o755); err != nil {
		t.Fatal(err)
	}
	marker := hostMarker(t, shared) // outside the chroot, on the same mount
	mounts := mountinfo(t)

	cmd := exec.Command("/bin/imgrun.test", "-test.run=^TestChrootChild$", "-test.v", "-test.count=1")
	cmd.Dir = "/"
	cmd.Env = append(os.Environ(), "IMGRUN_CHROOT_MARKER="+marker, "TMPDIR=/tmp")
	cmd.SysProcAttr = &syscall.SysProcAttr{Chroot: dir}
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestChrootChild") {
		t.Fatalf("runs in a chroot: %v\n%s", err, out)
	}
	if after := mountinfo(t); after != mounts {
		t.Errorf("mounts changed (propagated from the run?):\n%s\n---\n%s", mounts, after)
	}
}

// TestChrootChild is TestRunInChroot's launcher, inside the chroot.
func TestChrootChild(t *testing.T) {
	marker := os.Getenv("IMGRUN_CHROOT_MARKER")
	if marker == "" {
		t.Skip("only run by TestRunInChroot")
	}
	if mi := mountinfo(t); regexp.MustCompile(`(?m)^\S+ \S+ \S+ \S+ / `).MatchString(mi) {
		t.Fatalf("/ is a mount point here:\n%s", mi)
	}
	for _, noPivot := range []bool{false, true} {
		var out strings.Builder
		var errb strings.Builder
		spec := Spec{Rootfs: "/rootfs", StateDir: "/state", Hostname: "c", NoPivot: noPivot,
			Args: append([]string{}, unreachable(marker)...)}
		spec.Args[2] = "cat /proc/1/comm; hostname; " + spec.Args[2]
		if err := Run(t.Context(), spec, Stdio{Stdout: &out, Stderr: &errb}); err != nil {
			t.Fatalf("NoPivot %v: %v (stderr %q)", noPivot, err, errb.String())
		}
		if want := "imgrun-init\nc\n" + unreachableOut; out.String() != want {
			t.Errorf("NoPivot %v: output %q, want %q", noPivot, out.String(), want)
		}
	}
}
