package run

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// layerFiles writes files (path: content; a path ending in / is a directory) into the layer
// dir, creating it.
func layerFiles(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for p, content := range files {
		full := filepath.Join(dir, p)
		if strings.HasSuffix(p, "/") {
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// whiteout marks p deleted in the layer dir, as overlayfs does: a character device 0:0.
func whiteout(t *testing.T, dir, p string) {
	t.Helper()
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mknod(full, unix.S_IFCHR|0o000, 0); err != nil {
		t.Fatal(err)
	}
}

// opaque makes p in the layer dir a directory that hides what the layers below have there,
// marked with the xattr name (trusted.overlay.opaque, or user.overlay.opaque for a rootless
// run's overlay).
func opaque(t *testing.T, dir, p, xattr string) {
	t.Helper()
	full := filepath.Join(dir, p)
	if err := os.MkdirAll(full, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(full, xattr, []byte("y"), 0); err != nil {
		t.Fatal(err)
	}
}

// threeLayers returns a stack, top first: a middle layer (/data/a, /data/b, /etc/x, /etc2/old)
// over the busybox test rootfs, under a top layer that deletes /data/a, makes /etc2 opaque with
// /etc2/new in it, and adds /data/c.
func threeLayers(t *testing.T) (top string, lowers []string) {
	return threeLayersIn(t, t.TempDir(), "trusted.overlay.opaque")
}

// threeLayersIn is threeLayers in dir, with the opaque marker named xattr.
func threeLayersIn(t *testing.T, dir, xattr string) (top string, lowers []string) {
	t.Helper()
	middle := filepath.Join(dir, "middle")
	layerFiles(t, middle, map[string]string{"data/a": "a\n", "data/b": "b\n", "etc/x": "x from middle\n",
		"etc2/old": "old\n", "etc2/sub/": ""})
	top = filepath.Join(dir, "top")
	layerFiles(t, top, map[string]string{"data/c": "c\n", "etc2/new": "new\n"})
	whiteout(t, top, "data/a")
	opaque(t, top, "etc2", xattr)
	return top, []string{middle, testRootfs(t)}
}

// TestLowersMergedView checks that a run sees the stack as overlayfs merges it: whiteouts and
// opaque directories of upper layers hide what is below, lower files show through.
func TestLowersMergedView(t *testing.T) {
	top, lowers := threeLayers(t)
	script := "ls /data; echo -; ls -a /etc2; echo -; cat /etc/x /data/b /data/c; test -e /data/a || echo a gone; ls /bin/busybox"
	out, stderr, err := runOut(t, Spec{Rootfs: top, Lowers: lowers, Args: sh(script)})
	want := "b\nc\n-\n.\n..\nnew\n-\nx from middle\nb\nc\na gone\n/bin/busybox\n"
	if err != nil || out != want {
		t.Fatalf("run: %v (stderr %q)\noutput %q\nwant   %q", err, stderr, out, want)
	}
	out, stderr, err = runOut(t, Spec{Rootfs: top, Lowers: lowers, ReadOnly: true,
		Args: sh("touch /data/b 2>/dev/null || echo ro; cat /data/b")})
	if err != nil || out != "ro\nb\n" {
		t.Fatalf("read-only run: %v (stderr %q): output %q", err, stderr, out)
	}
}

// TestLowersUnsafe checks that the launcher's mount targets are checked in the merged view: a
// /proc symlink in a lower layer is refused, and a top layer can make it safe again.
func TestLowersUnsafe(t *testing.T) {
	dir := t.TempDir()
	symlinked := filepath.Join(dir, "symlinked")
	layerFiles(t, symlinked, nil)
	if err := os.Symlink("/etc", filepath.Join(symlinked, "proc")); err != nil {
		t.Fatal(err)
	}
	empty, fixed := filepath.Join(dir, "empty"), filepath.Join(dir, "fixed")
	layerFiles(t, empty, nil)
	layerFiles(t, fixed, map[string]string{"proc/": ""})
	opaque(t, fixed, "proc", "trusted.overlay.opaque")
	stack := []string{symlinked, testRootfs(t)}
	if _, _, err := runOut(t, Spec{Rootfs: empty, Lowers: stack, Args: []string{"true"}}); !errors.Is(err, ErrUnsafeRootfs) {
		t.Fatalf("/proc a symlink in a lower layer: %v, want ErrUnsafeRootfs", err)
	}
	if out, stderr, err := runOut(t, Spec{Rootfs: fixed, Lowers: stack, Args: sh("readlink /proc/self/exe")}); err != nil || out != "/bin/busybox\n" {
		t.Fatalf("/proc a directory again on top: %v (stderr %q): %q", err, stderr, out)
	}
}

// TestLowersNormalize checks that lower layers are made absolute.
func TestLowersNormalize(t *testing.T) {
	wd, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	s, err := Spec{Rootfs: "/", Lowers: []string{".", wd + "/../run"}, Args: []string{"true"}}.normalize()
	if err != nil || len(s.Lowers) != 2 || s.Lowers[0] != wd || s.Lowers[1] != wd {
		t.Fatalf("normalize: %q, %v; want [%s %s]", s.Lowers, err, wd, wd)
	}
}

// TestLowersUser checks that Spec.User and Spec.Dir resolve in the merged view: /etc/passwd,
// /etc/group and /home/app exist only in the bottom layer.
func TestLowersUser(t *testing.T) {
	top, lowers := threeLayers(t)
	for _, l := range []string{top, lowers[0]} {
		if _, err := os.Stat(filepath.Join(l, "etc/passwd")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s has /etc/passwd: %v", l, err)
		}
	}
	out, stderr, err := runOut(t, Spec{Rootfs: top, Lowers: lowers, User: "app", Dir: "/home/app",
		Args: sh("id -u; id -G; echo $HOME; pwd")})
	if want := "1000\n1000 2000\n/home/app\n/home/app\n"; err != nil || out != want {
		t.Fatalf("run as app: %v (stderr %q): output %q, want %q", err, stderr, out, want)
	}
	_, _, err = runOut(t, Spec{Rootfs: top, Lowers: lowers, User: "nosuch", Args: []string{"true"}})
	if !errors.Is(err, ErrUnknownUser) {
		t.Fatalf("unknown user: %v, want ErrUnknownUser", err)
	}
}

// TestLowersUnchanged checks that a run that writes, deletes and replaces files in every layer
// leaves every layer as it was (including the whiteout and the opaque marker), also with KeepDir.
func TestLowersUnchanged(t *testing.T) {
	top, lowers := threeLayers(t)
	layers := append([]string{top}, lowers...)
	before := make([]string, len(layers))
	for i, l := range layers {
		before[i] = treeHash(t, l)
	}
	script := "rm /data/b /etc/x /bin/ls /etc2/new && echo w > /data/a && echo y >> /etc/passwd && " +
		"rm -r /etc2 && mkdir /etc2 && echo z > /etc2/old && mkdir -p /data/d && echo ok"
	keep := filepath.Join(t.TempDir(), "keep")
	for _, k := range []string{"", keep} {
		out, stderr, err := runOut(t, Spec{Rootfs: top, Lowers: lowers, KeepDir: k, Args: sh(script)})
		if err != nil || out != "ok\n" {
			t.Fatalf("run (KeepDir %q): %v %q %q", k, err, out, stderr)
		}
	}
	for i, l := range layers {
		if after := treeHash(t, l); after != before[i] {
			t.Errorf("the run changed layer %d (%s)", i, l)
		}
	}
	buf := make([]byte, 8)
	if n, err := unix.Getxattr(filepath.Join(top, "etc2"), "trusted.overlay.opaque", buf); err != nil || string(buf[:n]) != "y" {
		t.Errorf("opaque marker of the top layer: %q, %v", buf[:n], err)
	}
	// The kept layer continues: the second run found its own /data/a, not the whiteout.
	if b, err := os.ReadFile(filepath.Join(keep, "upper/data/a")); err != nil || string(b) != "w\n" {
		t.Errorf("kept layer: %q, %v", b, err)
	}
}

// deepStack makes a stack of n layers above the busybox test rootfs, top first, in
// directories with long names (as a snapshot store's: 64 hex digits). Layer i (0 is the top)
// has /layers/f<i> and /layers/same, both holding i; the top one also deletes /layers/f<n-1>.
func deepStack(t *testing.T, n int) (top string, lowers []string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "var-lib-imgrun", "snapshots")
	var stack []string
	for i := range n {
		l := filepath.Join(dir, fmt.Sprintf("%064x", i+1))
		name := fmt.Sprintf("f%d", i)
		layerFiles(t, l, map[string]string{"layers/" + name: fmt.Sprintln(i), "layers/same": fmt.Sprintln(i)})
		stack = append(stack, l)
	}
	whiteout(t, stack[0], fmt.Sprintf("layers/f%d", n-1))
	return stack[0], append(stack[1:], testRootfs(t))
}

// TestLowersDeepStack runs in a stack of 121 layers whose lowerdir= option alone would take
// about four pages: too long for mount(2).
func TestLowersDeepStack(t *testing.T) {
	const n = 120
	top, lowers := deepStack(t, n)
	if opts := len(top) + len(strings.Join(lowers, ":")); opts <= maxMountData() {
		t.Fatalf("the stack's paths are %d bytes: they fit in mount(2)'s options, test nothing", opts)
	}
	script := fmt.Sprintf("ls /layers | wc -l; cat /layers/same /layers/f0 /layers/f%d; test -e /layers/f%d || echo gone", n-2, n-1)
	out, stderr, err := runOut(t, Spec{Rootfs: top, Lowers: lowers, Args: sh(script)})
	want := fmt.Sprintf("%d\n0\n0\n%d\ngone\n", n, n-2) // f0..f<n-2> and same
	if err != nil || out != want {
		t.Fatalf("run: %v (stderr %q): output %q, want %q", err, stderr, out, want)
	}
}

// inMountNamespace calls fn on a thread of its own in a new private mount namespace; the
// thread exits with fn, and the namespace with its mounts.
func inMountNamespace(t *testing.T, fn func()) {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNS); err != nil {
			done <- err
			return
		}
		if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
			done <- err
			return
		}
		fn()
		done <- nil
	}()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestLowersClassicMount checks the fallback for kernels without "lowerdir+": mount(2) with
// every layer named by its /proc/self/fd link when the paths do not fit, and a clear error when
// even the links do not.
func TestLowersClassicMount(t *testing.T) {
	const n = 120
	top, lowers := deepStack(t, n)
	rw := t.TempDir()
	ov := overlay{lowers: append([]string{top}, lowers...), upper: filepath.Join(rw, "upper"),
		work: filepath.Join(rw, "work"), volatile: true, nosuid: true}
	target := filepath.Join(rw, "root")
	for _, d := range []string{ov.upper, ov.work, target} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	var mountErr error
	var names []string
	var same []byte
	inMountNamespace(t, func() {
		if mountErr = ov.mountClassic(target); mountErr != nil {
			return
		}
		ents, _ := os.ReadDir(filepath.Join(target, "layers"))
		for _, e := range ents {
			names = append(names, e.Name())
		}
		same, _ = os.ReadFile(filepath.Join(target, "layers/same"))
	})
	if mountErr != nil {
		t.Fatalf("mount(2) of %d layers: %v", n+1, mountErr)
	}
	if len(names) != n || string(same) != "0\n" {
		t.Fatalf("merged view: %d names in /layers (want %d), /layers/same %q (want \"0\\n\")", len(names), n, same)
	}

	// About 18 bytes a layer: 300 links do not fit in 4095 bytes.
	dir := t.TempDir()
	ov.lowers = nil
	for i := range 300 {
		l := filepath.Join(dir, fmt.Sprint(i))
		if err := os.Mkdir(l, 0o755); err != nil {
			t.Fatal(err)
		}
		ov.lowers = append(ov.lowers, l)
	}
	if os.Getpagesize() > 4096 {
		t.Skip("mount(2) takes a page of options: 300 links fit in this one")
	}
	err := ov.mountClassic(target) // fails before mount(2)
	if err == nil || !strings.Contains(err.Error(), "300 layers") {
		t.Fatalf("mount(2) of 300 layers: %v, want an error naming the 300 layers", err)
	}
}

// TestLowersBadSpec checks that Run refuses lower layers that are not directories, or that the
// run's tmpfs would hide, before it starts anything.
func TestLowersBadSpec(t *testing.T) {
	rootfs := testRootfs(t)
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	state := t.TempDir()
	inState := filepath.Join(state, "layer")
	if err := os.Mkdir(inState, 0o755); err != nil {
		t.Fatal(err)
	}
	tests := map[string][]string{
		"a file":                  {file},
		"missing":                 {filepath.Join(t.TempDir(), "nosuch")},
		"empty":                   {""},
		"second is a file":        {rootfs, file},
		"inside the state dir":    {inState},
		"file below a good layer": {t.TempDir(), "/dev/null"},
	}
	for name, lowers := range tests {
		t.Run(name, func(t *testing.T) {
			before := mountinfo(t)
			_, _, err := runOut(t, Spec{Lowers: lowers, StateDir: state, Args: []string{"true"}})
			if !errors.Is(err, ErrBadSpec) {
				t.Fatalf("err = %v, want ErrBadSpec", err)
			}
			if after := mountinfo(t); after != before {
				t.Errorf("mounts changed")
			}
		})
	}
}

// TestLowersRootless runs a stack as nobody (uid 65534), in a user namespace: its overlay
// (userxattr) reads the opaque marker from user.overlay.opaque.
func TestLowersRootless(t *testing.T) {
	testRootfs(t)
	setpriv := "/usr/bin/setpriv"
	if _, err := os.Stat(setpriv); err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	dir := t.TempDir()
	os.Chmod(filepath.Dir(dir), 0o755)
	os.Chmod(dir, 0o777)
	top, lowers := threeLayersIn(t, dir, "user.overlay.opaque")
	// As after a rootless unpack, the user owns its layers (the shared bottom one stays root's).
	for _, l := range []string{top, lowers[0]} {
		if out, err := execCommand("chown", "-R", "-h", "65534:65534", l).CombinedOutput(); err != nil {
			t.Fatalf("chown layer: %v %s", err, out)
		}
	}
	state := filepath.Join(dir, "state")
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "run.test")
	if err := copyFile(self, bin); err != nil {
		t.Fatal(err)
	}
	cmd := execCommand(setpriv, "--reuid", "65534", "--regid", "65534", "--clear-groups", bin,
		"-test.run", "^TestLowersRootlessChild$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), "IMGRUN_TEST_LOWERS_ROOTLESS="+strings.Join(append([]string{state, top}, lowers...), ":"))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestLowersRootlessChild") {
		t.Fatalf("rootless run: %v\n%s", err, out)
	}
}

// TestLowersRootlessChild is TestLowersRootless's child, run as an unprivileged user.
func TestLowersRootlessChild(t *testing.T) {
	arg := os.Getenv("IMGRUN_TEST_LOWERS_ROOTLESS")
	if arg == "" {
		t.Skip("run by TestLowersRootless")
	}
	paths := strings.Split(arg, ":")
	spec := Spec{StateDir: paths[0], Rootfs: paths[1], Lowers: paths[2:], User: "root",
		Args: sh("id -u; ls /data; ls -a /etc2; cat /etc/x; echo w > /data/a && cat /data/a")}
	var out, errb strings.Builder
	if err := Run(t.Context(), spec, Stdio{Stdout: &out, Stderr: &errb}); err != nil {
		t.Fatalf("run: %v (stderr %q)", err, errb.String())
	}
	if want := "0\nb\nc\n.\n..\nnew\nx from middle\nw\n"; out.String() != want {
		t.Fatalf("output %q, want %q", out.String(), want)
	}
}
