package rootfs

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
	"golang.org/x/sys/unix"
)

const rootlessChildEnv = "IMGRUN_ROOTFS_ROOTLESS_CHILD"

// TestRootless re-runs this test binary as nobody (setpriv --reuid 65534) to run
// TestRootlessChild and the hostile suite without privileges, in a directory nobody owns.
func TestRootless(t *testing.T) {
	requiresRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv not installed")
	}
	dir, err := os.MkdirTemp("", "imgrun-rootless-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	// The test binary and the corpus must be reachable by nobody: copy them into its directory.
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "rootfs.test")
	copyFile(t, self, bin, 0o755)
	hostile := filepath.Join(dir, "testdata", "hostile")
	if err := os.MkdirAll(hostile, 0o755); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Join("testdata", "hostile"))
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		copyFile(t, filepath.Join("testdata", "hostile", e.Name()), filepath.Join(hostile, e.Name()), 0o644)
	}
	tmp := filepath.Join(dir, "tmp")
	if err := os.Mkdir(tmp, 0o700); err != nil {
		t.Fatal(err)
	}
	err = filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, 65534, 65534)
	})
	if err != nil {
		t.Fatal(err)
	}
	args := []string{"--reuid", "65534", "--regid", "65534", "--clear-groups", bin,
		"-test.run", "^(" + strings.Join(rootlessTests, "|") + ")$", "-test.v"}
	cmd := exec.CommandContext(t.Context(), setpriv, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), rootlessChildEnv+"=1", "TMPDIR="+tmp, "HOME="+dir, "GOCOVERDIR="+tmp)
	out, err := cmd.CombinedOutput()
	t.Logf("rootless run:\n%s", out)
	if err != nil {
		t.Fatalf("rootless run failed: %v", err)
	}
	for _, name := range rootlessTests {
		if !bytes.Contains(out, []byte("--- PASS: "+name+" ")) {
			t.Errorf("rootless test %s did not pass", name)
		}
	}
}

// rootlessTests are the tests TestRootless runs as nobody.
var rootlessTests = []string{"TestRootlessChild", "TestHostileRootless", "TestRootlessReadOnlyOwned",
	"TestExportMatchesFlattenRandom", "TestExportMatchesFlatten", "TestExportHostile", "TestApplyWhiteoutResetDropsXattrs"}

func copyFile(t *testing.T, from, to string, perm os.FileMode) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(to, b, perm); err != nil {
		t.Fatal(err)
	}
}

func rootlessChild(t *testing.T) {
	t.Helper()
	if os.Getenv(rootlessChildEnv) == "" {
		t.Skip("run by TestRootless as an unprivileged user")
	}
	if os.Geteuid() == 0 {
		t.Fatal("rootless child runs as root")
	}
}

// TestHostileRootless is the hostile suite without privileges (devices are skipped).
func TestHostileRootless(t *testing.T) {
	rootlessChild(t)
	runHostile(t)
}

// countingHandler counts warnings.
type countingHandler struct {
	slog.Handler
	warns *atomic.Int32
}

func (h countingHandler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level == slog.LevelWarn {
		h.warns.Add(1)
	}
	return h.Handler.Handle(ctx, r)
}

func TestRootlessChild(t *testing.T) {
	rootlessChild(t)
	root := t.TempDir()
	t.Cleanup(func() { makeRemovable(root) })
	var warns atomic.Int32
	logger := slog.New(countingHandler{slog.NewTextHandler(io.Discard, nil), &warns})
	layers := []L{
		{
			file("owned", "o", owner(1000, 1001), mode(0o640)),
			file("rootfile", "r"),
			file("gidonly", "g", owner(0, 5)),
			file("su", "s", mode(0o4755), owner(0, 0)),
			file("cap", "c", tartest.Xattr("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")),
			dir("ro/", mode(0o555), owner(7, 7)),
			file("ro/a", "a"),
			dir("ro/sub/", mode(0o500)),
			file("ro/sub/deep", "d", mode(0o400)),
			tartest.Char("dev/null", 1, 3), tartest.Block("dev/sda", 8, 0),
			tartest.Fifo("fifo"),
			link("hl", "owned"),
		},
		{
			file("ro/b", "b"), wh("ro/a"), file("ro/sub/deep2", "d2"),
			dir("locked/", mode(0o000)), file("locked/x", "x"),
			dir("locked2/", mode(0o000)), file("locked2/a", "a"),
			dir("noexec/", mode(0o444)), file("noexec/a", "a"),
			dir("op/", mode(0o555)), file("op/a", "a"), dir("op/h/", mode(0)), file("op/h/x", "x"),
		},
		{
			wh("locked"), file("ro/sub/deep", "replaced"),
			file("locked2/b", "b"), wh("locked2/a"), file("noexec/b", "b"), wh("noexec/a"),
			opaque("op"), file("op/new", "n"),
		},
	}
	for i, l := range layers {
		before := warns.Load()
		if err := Apply(t.Context(), root, tartest.Reader(l...), WithLogger(logger)); err != nil {
			t.Fatalf("layer %d: %v", i+1, err)
		}
		if i == 0 && warns.Load()-before != 2 {
			t.Errorf("layer 1 logged %d warnings, want 2 (devices skipped, capability dropped)", warns.Load()-before)
		}
	}
	// Directories without permissions for us keep their image mode and got their contents.
	for p, want := range map[string]os.FileMode{"locked2": 0, "noexec": 0o444, "ro": 0o555, "ro/sub": 0o500, "op": 0o555} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s mode %v, want %v", p, fi.Mode().Perm(), want)
		}
	}
	makeRemovable(root)
	uid, gid := os.Geteuid(), os.Getegid()
	o := fmt.Sprintf("%d:%d", uid, gid)
	want := map[string]string{
		"owned":        `file 0640 ` + o + ` "o"`,
		"hl":           `file 0640 ` + o + ` "o"`,
		"rootfile":     `file 0644 ` + o + ` "r"`,
		"gidonly":      `file 0644 ` + o + ` "g"`,
		"su":           `file 4755 ` + o + ` "s"`,
		"cap":          `file 0644 ` + o + ` "c"`,
		"ro":           "dir 0700 " + o, // 0555 before makeRemovable
		"ro/b":         `file 0644 ` + o + ` "b"`,
		"ro/sub":       "dir 0700 " + o,
		"ro/sub/deep":  `file 0644 ` + o + ` "replaced"`,
		"ro/sub/deep2": `file 0644 ` + o + ` "d2"`,
		"fifo":         "fifo 0644 " + o,
		"locked2":      "dir 0700 " + o, // after makeRemovable
		"locked2/b":    `file 0644 ` + o + ` "b"`,
		"noexec":       "dir 0700 " + o,
		"noexec/b":     `file 0644 ` + o + ` "b"`,
		"op":           "dir 0700 " + o,
		"op/new":       `file 0644 ` + o + ` "n"`,
	}
	if d := diffTrees(tree(t, root), want); d != "" {
		t.Errorf("tree differs:\n%s", d)
	}
	for p, w := range map[string][2]uint32{"owned": {1000, 1001}, "gidonly": {0, 5}, "ro": {7, 7}, "rootfile": {0, 0}, "su": {0, 0}} {
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(root, p), rootlessXattr, buf)
		if w == [2]uint32{0, 0} {
			if err == nil {
				t.Errorf("%s: %s set for owner 0:0", p, rootlessXattr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %s: %v", p, rootlessXattr, err)
			continue
		}
		u, g, ok := parseRootlessOwner(buf[:n])
		if !ok || u != w[0] || g != w[1] {
			t.Errorf("%s: owner xattr %x = %d:%d (%v), want %d:%d", p, buf[:n], u, g, ok, w[0], w[1])
		}
	}
	if _, err := unix.Lgetxattr(filepath.Join(root, "cap"), "security.capability", make([]byte, 64)); err == nil {
		t.Error("security.capability written rootless")
	}
	var st syscall.Stat_t
	if err := syscall.Lstat(root, &st); err != nil || int(st.Uid) != uid {
		t.Errorf("root owner %d, want %d (%v)", st.Uid, uid, err)
	}
}

// TestRootlessReadOnlyOwned applies read-only files and directories with a non-root owner and
// xattrs: the owner xattr must be written before the final mode takes write permission away.
func TestRootlessReadOnlyOwned(t *testing.T) {
	if os.Geteuid() == 0 {
		rootlessChild(t) // skips: run by TestRootless as nobody
	}
	root := t.TempDir()
	t.Cleanup(func() { makeRemovable(root) })
	x := tartest.Xattr("user.imgrun", "v")
	layers := []L{
		{
			file("ro", "r", mode(0o444), owner(1000, 1000), x),
			file("none", "n", mode(0), owner(0, 7)),
			file("suid", "s", mode(0o4555), owner(1000, 0)),
			dir("d555/", mode(0o555), owner(5, 5), x), file("d555/f", "f", mode(0o400), owner(6, 6)),
			dir("d000/", mode(0), owner(8, 8)), file("d000/f", "f", mode(0o444), owner(9, 9)),
		},
		{file("d555/g", "g", mode(0o440), owner(10, 10)), dir("d000/", mode(0), owner(11, 11))},
	}
	for i, l := range layers {
		if err := Apply(t.Context(), root, tartest.Reader(l...)); err != nil {
			t.Fatalf("layer %d: %v", i+1, err)
		}
	}
	wantMode := map[string]os.FileMode{"ro": 0o444, "none": 0, "suid": 0o4555 | os.ModeSetuid, "d555": 0o555, "d000": 0,
		"d555/f": 0o400, "d555/g": 0o440}
	for p, want := range wantMode {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode() & (os.ModePerm | os.ModeSetuid); got != want&(os.ModePerm|os.ModeSetuid) {
			t.Errorf("%s: mode %v, want %v", p, got, want)
		}
	}
	makeRemovable(root)
	wantOwner := map[string][2]uint32{"ro": {1000, 1000}, "none": {0, 7}, "suid": {1000, 0}, "d555": {5, 5},
		"d555/f": {6, 6}, "d555/g": {10, 10}, "d000": {11, 11}, "d000/f": {9, 9}}
	for p, w := range wantOwner {
		if p == "none" || p == "ro" || p == "suid" || strings.Contains(p, "/f") || strings.Contains(p, "/g") {
			os.Chmod(filepath.Join(root, p), 0o600) // so that we may read the xattr back
		}
		buf := make([]byte, 64)
		n, err := unix.Lgetxattr(filepath.Join(root, p), rootlessXattr, buf)
		if err != nil {
			t.Errorf("%s: %s: %v", p, rootlessXattr, err)
			continue
		}
		if u, g, ok := parseRootlessOwner(buf[:n]); !ok || u != w[0] || g != w[1] {
			t.Errorf("%s: owner %d:%d (%v), want %d:%d", p, u, g, ok, w[0], w[1])
		}
	}
	for _, p := range []string{"ro", "d555"} {
		if n, err := unix.Lgetxattr(filepath.Join(root, p), "user.imgrun", make([]byte, 8)); err != nil || n != 1 {
			t.Errorf("%s: user.imgrun: %d, %v", p, n, err)
		}
	}
}

func TestRootlessOwnerEncoding(t *testing.T) {
	for _, tc := range []struct {
		uid, gid int
		hex      string
	}{
		{0, 0, ""},
		{1000, 0, "08e80710ffffffff0f"},
		{0, 5, "08ffffffff0f1005"},
		{1, 2, "08011002"},
	} {
		got := fmt.Sprintf("%x", rootlessOwner(tc.uid, tc.gid))
		if got != tc.hex {
			t.Errorf("rootlessOwner(%d, %d) = %s, want %s", tc.uid, tc.gid, got, tc.hex)
		}
		if tc.hex == "" {
			continue
		}
		u, g, ok := parseRootlessOwner(rootlessOwner(tc.uid, tc.gid))
		if !ok || int(u) != tc.uid || int(g) != tc.gid {
			t.Errorf("round trip %d:%d gave %d:%d %v", tc.uid, tc.gid, u, g, ok)
		}
	}
}

// makeRemovable gives every directory under root u+rwx, so that an unprivileged RemoveAll can
// delete the 0555 and 0000 directories images contain.
func makeRemovable(root string) {
	// WalkDir calls the function before reading a directory, so the chmod comes first.
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && d.IsDir() {
			os.Chmod(p, 0o700)
		}
		return nil
	})
}
