package rootfs

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/tartest"
	"golang.org/x/sys/unix"
)

// updateHostile rewrites testdata/hostile from hostileCases:
//
//	go test ./pkg/rootfs -run TestGenerateHostile -update-hostile
var updateHostile = flag.Bool("update-hostile", false, "rewrite testdata/hostile/*.tar")

// hostSentinel is a path on the host's root that an absolute escape would create.
const hostSentinel = "imgrun-hostile-victim"

// deepUp climbs far past any temp directory, to the host's /.
var deepUp = strings.Repeat("../", 40)

// hostileCase is one attack. Layers are applied in order into <tmp>/root, beside <tmp>/victim
// and <tmp>/root-evil. wantErr says whether Apply must fail (else it must succeed, confined);
// check may assert where a confined write landed.
type hostileCase struct {
	name    string
	layers  []L
	wantErr bool
	check   func(t *testing.T, root string)
}

func landed(rel, want string) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		t.Helper()
		if os.Geteuid() != 0 { // rootless: everything belongs to us
			want = strings.Replace(want, " 0:0", fmt.Sprintf(" %d:%d", os.Geteuid(), os.Getegid()), 1)
		}
		if got := describe(t, filepath.Join(root, rel)); got != want {
			t.Errorf("%s in root: got %s, want %s", rel, got, want)
		}
	}
}

func absent(rel string) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		t.Helper()
		if _, err := os.Lstat(filepath.Join(root, rel)); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("%s in root: still there (%v)", rel, err)
		}
	}
}

var hostileCases = []hostileCase{
	// A1: traversal in names.
	{name: "dotdot-name", layers: []L{{file("../victim/pwn", "x")}}, wantErr: true},
	{name: "dotdot-inner-name", layers: []L{{file("a/../../victim/pwn", "x")}}, wantErr: true},
	{name: "dotdot-bare-dir", layers: []L{{dir("..", mode(0o777))}}, wantErr: true},
	{name: "dotdot-trailing-dir", layers: []L{{dir("victim/..", mode(0o777))}}, wantErr: true},
	{name: "dotdot-deep-name", layers: []L{{file(deepUp+hostSentinel, "x")}}, wantErr: true},
	// A2: absolute names are relative to the root.
	{name: "absolute-name", layers: []L{{file("/victim/file", "pwned")}}, check: landed("victim/file", `file 0644 0:0 "pwned"`)},
	{name: "absolute-dotdot-name", layers: []L{{file("/../victim/pwn", "x")}}, wantErr: true},
	// A3: write through a symlink.
	{name: "symlink-relative-escape-write", layers: []L{{dir("victim/"), symlink("lnk", "../victim"), file("lnk/pwn", "x")}},
		check: landed("victim/pwn", `file 0644 0:0 "x"`)},
	{name: "symlink-relative-escape-dangling", layers: []L{{symlink("lnk", "../victim"), file("lnk/pwn", "x")}}, wantErr: true},
	{name: "symlink-absolute-root-write", layers: []L{{symlink("a", "/"), file("a/"+hostSentinel, "x")}},
		check: landed(hostSentinel, `file 0644 0:0 "x"`)},
	{name: "symlink-deep-up-write", layers: []L{{symlink("up", deepUp), file("up/"+hostSentinel, "x")}},
		check: landed(hostSentinel, `file 0644 0:0 "x"`)},
	{name: "symlink-escape-across-layers", layers: []L{{dir("victim/"), symlink("lnk", "../victim")}, {file("lnk/file", "x")}},
		check: landed("victim/file", `file 0644 0:0 "x"`)},
	{name: "symlink-absolute-across-layers", layers: []L{{symlink("etc", "/")}, {file("etc/"+hostSentinel, "x")}},
		check: landed(hostSentinel, `file 0644 0:0 "x"`)},
	{name: "symlink-deep-parent", layers: []L{
		{dir("victim/"), dir("a/b/c/"), symlink("a/b/c/d", "../../../../../../victim")},
		{file("a/b/c/d/e/f/pwn", "x")},
	}, check: landed("victim/e/f/pwn", `file 0644 0:0 "x"`)},
	{name: "symlink-sibling-prefix", layers: []L{{symlink("x", "../root-evil"), file("x/pwn", "x")}}, wantErr: true},
	{name: "symlink-override-path", layers: []L{{dir("foo/"), symlink("foo", "/"), dir("foo/"), file("foo/x", "x")}},
		check: landed("foo/x", `file 0644 0:0 "x"`)},
	// A4: two-hop relative escape.
	{name: "symlink-two-hop-escape", layers: []L{{
		dir("inner/"), symlink("inner/go_up", ".."), symlink("inner/go_up/escape", "../victim"), file("inner/go_up/escape/newfile", "x"),
	}}, wantErr: true},
	{name: "symlink-two-hop-escape-existing", layers: []L{{
		dir("victim/"), dir("inner/"), symlink("inner/go_up", ".."), symlink("inner/go_up/escape", "../victim"), file("inner/go_up/escape/newfile", "x"),
	}}, check: landed("victim/newfile", `file 0644 0:0 "x"`)},
	// A5: hard links out of the root.
	{name: "hardlink-outside-relative", layers: []L{{link("h", "../victim/file")}}, wantErr: true},
	{name: "hardlink-outside-relative-long", layers: []L{{link("h", deepUp+"etc/passwd")}}, wantErr: true},
	{name: "hardlink-outside-down-and-out", layers: []L{{dir("a/"), link("h", "a/../../victim/file")}}, wantErr: true},
	{name: "hardlink-outside-absolute", layers: []L{{link("h", "/etc/passwd")}}, wantErr: true},
	{name: "hardlink-through-symlink-parent", layers: []L{{symlink("lnk", "../victim"), link("h", "lnk/file")}}, wantErr: true},
	{name: "hardlink-through-absolute-symlink", layers: []L{{symlink("lnk", "/etc"), link("h", "lnk/passwd")}}, wantErr: true},
	// A6: hard link to a symlink, then metadata and a write.
	{name: "hardlink-symlink-chmod", layers: []L{{
		symlink("localpasswd", "../victim/file"), link("sketchylink", "localpasswd", mode(0o777), owner(1, 1)),
	}}, check: landed("sketchylink", "symlink ../victim/file 0:0")},
	{name: "hardlink-symlink-then-write", layers: []L{
		{symlink("localpasswd", "../victim/file"), link("sketchylink", "localpasswd")},
		{file("sketchylink", "pwned", mode(0o777))},
	}, check: landed("sketchylink", `file 0777 0:0 "pwned"`)},
	{name: "hardlink-symlink-before-target", layers: []L{{
		symlink("lnk", "../victim/file"), link("hl", "lnk"), file("victim/file", "inside", mode(0o600)),
	}}, check: landed("hl", "symlink ../victim/file 0:0")},
	// A7: special base names.
	{name: "symlink-named-dotdot", layers: []L{{symlink("..", "/etc/"), link("localpasswd", "/etc/passwd")}}, wantErr: true},
	{name: "symlink-named-dot", layers: []L{{symlink("a/.", "../victim")}}, wantErr: true},
	// A8: the root replaced by a symlink.
	{name: "root-replaced-by-symlink", layers: []L{{symlink(".", "../victim"), file("pwn", "x")}}, wantErr: true},
	{name: "root-slash-replaced-by-symlink", layers: []L{{symlink("./", "../victim")}, {file("pwn", "x")}}, wantErr: true},
	{name: "root-replaced-by-file", layers: []L{{file(".", "x")}}, wantErr: true},
	// A9: whiteouts that escape or target the root.
	{name: "whiteout-root-parent", layers: []L{{file(".wh..", "")}}, wantErr: true},
	{name: "whiteout-root", layers: []L{{file(".wh...", "")}}, wantErr: true},
	{name: "whiteout-parent", layers: []L{{file("etc/.wh..", "")}}, wantErr: true},
	{name: "whiteout-current-directory", layers: []L{{file("etc/.wh...", "")}}, wantErr: true},
	{name: "whiteout-dotdot-name", layers: []L{{file("../.wh.victim", "")}}, wantErr: true},
	{name: "whiteout-empty", layers: []L{{file("d/.wh.", "")}}, wantErr: true},
	// A10: whiteouts through symlinked parents.
	{name: "whiteout-symlink-parent", layers: []L{{symlink("lnk", "../victim")}, {wh("lnk/file")}}, check: landed("lnk", "symlink ../victim 0:0")},
	{name: "whiteout-absolute-symlink-parent", layers: []L{{symlink("lnk", deepUp+"tmp")}, {wh("lnk/" + hostSentinel)}}},
	{name: "whiteout-symlink-removes-link", layers: []L{{symlink("lnk", "../victim")}, {wh("lnk")}}, check: absent("lnk")},
	{name: "whiteout-dead-symlink-parent", layers: []L{{symlink("dead", "/does/not/exist")}, {wh("dead/file")}}},
	{name: "whiteout-relative-path", layers: []L{{dir("d/")}, {wh("d/../../victim")}}, wantErr: true},
	// A11: opaque markers.
	{name: "opaque-in-symlinked-dir", layers: []L{{symlink("lnk", "../victim")}, {opaque("lnk")}}, check: landed("lnk", "symlink ../victim 0:0")},
	{name: "opaque-in-absolute-symlinked-dir", layers: []L{{file("keep", "k"), symlink("lnk", "/")}, {opaque("lnk"), file("new", "n")}},
		check: landed("new", `file 0644 0:0 "n"`)},
	// A13 and metadata over symlinks to the outside.
	{name: "dir-over-symlink-outside", layers: []L{{symlink("lnk", "../victim")}, {dir("lnk/", mode(0o777), tartest.MTime(time.Unix(1, 0)))}},
		check: landed("lnk", "dir 0777 0:0")},
	{name: "file-over-symlink-outside", layers: []L{{symlink("lnk", "../victim/file")}, {file("lnk", "pwned", mode(0o666))}},
		check: landed("lnk", `file 0666 0:0 "pwned"`)},
	{name: "fifo-over-symlink-outside", layers: []L{{symlink("lnk", "../victim/file"), tartest.Fifo("lnk")}}, check: landed("lnk", "fifo 0644 0:0")},
	{name: "symlink-over-dir-then-write", layers: []L{{dir("lib/"), file("lib/a", "1")}, {symlink("lib", "../victim")}, {file("lib/x", "x")}},
		wantErr: true},
	{name: "chmod-through-symlink-same-name", layers: []L{{symlink("victim", "../victim"), dir("victim", mode(0o777))}},
		check: landed("victim", "dir 0777 0:0")},
	// A16: xattr smuggling.
	{name: "xattr-overlay-smuggling", layers: []L{{dir("d/", tartest.Xattr("trusted.overlay.opaque", "y"), tartest.Xattr("user.overlay.opaque", "y"))}},
		check: noXattrs("d", "trusted.overlay.opaque", "user.overlay.opaque")},
	// A20: symlink loops and long chains.
	{name: "symlink-loop", layers: []L{{symlink("a", "b"), symlink("b", "a"), file("a/x", "x")}}, wantErr: true},
	{name: "symlink-self-loop", layers: []L{{symlink("a", "a"), file("a/x", "x")}}, wantErr: true},
	{name: "symlink-long-chain", layers: []L{chain(60)}, wantErr: true},
	// A14 (rootless part tested in rootless_test.go): a device node stays inside the root.
	{name: "device-node", layers: []L{{tartest.Char("dev/mem", 1, 1), tartest.Block("dev/sda", 8, 0)}}},
}

// chain is a 60-hop symlink chain followed by a write through it.
func chain(n int) L {
	var l L
	for i := range n {
		l = append(l, symlink(fmt.Sprintf("c%d", i), fmt.Sprintf("c%d", i+1)))
	}
	l = append(l, dir(fmt.Sprintf("c%d/", n)), file("c0/x", "x"))
	return l
}

func hostileFiles(c hostileCase) map[string][]byte {
	m := map[string][]byte{}
	for i, l := range c.layers {
		name := c.name + ".tar"
		if len(c.layers) > 1 {
			name = fmt.Sprintf("%s.L%d.tar", c.name, i+1)
		}
		m[name] = tartest.Tar(l...)
	}
	return m
}

// TestGenerateHostile checks that testdata/hostile matches hostileCases (with -update-hostile it
// rewrites it).
func TestGenerateHostile(t *testing.T) {
	dir := filepath.Join("testdata", "hostile")
	want := map[string][]byte{}
	for _, c := range hostileCases {
		for n, b := range hostileFiles(c) {
			want[n] = b
		}
	}
	if *updateHostile {
		os.RemoveAll(dir)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for n, b := range want {
			if err := os.WriteFile(filepath.Join(dir, n), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != len(want) {
		t.Errorf("%s has %d files, hostileCases make %d; run with -update-hostile", dir, len(ents), len(want))
	}
	for n, b := range want {
		got, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s is stale (%v); run with -update-hostile", n, err)
		}
	}
}

// victimDir sets up tmp/root beside tmp/victim and tmp/root-evil, with files, a directory and
// symlinks pointing at them; it returns the root.
func victimDir(t testing.TB) (tmp, root string) {
	t.Helper()
	tmp = t.TempDir()
	root = filepath.Join(tmp, "root")
	mtime := time.Date(2010, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, d := range []string{"root", "victim", "victim/dir", "root-evil"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"victim/file", "victim/dir/inner", "root-evil/file"} {
		p := filepath.Join(tmp, f)
		if err := os.WriteFile(p, []byte("victim "+f), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	for l, target := range map[string]string{"victim/link": "file", "victimlink": "victim", "abslink": filepath.Join(tmp, "victim")} {
		if err := os.Symlink(target, filepath.Join(tmp, l)); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range []string{"victim/file", "victim/dir/inner", "victim/dir", "victim", "root-evil/file", "root-evil"} {
		if err := os.Chtimes(filepath.Join(tmp, p), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	return tmp, root
}

// snapshot records everything under tmp except root: lstat fields, content, link targets.
func snapshot(t testing.TB, tmp, root string) map[string]string {
	t.Helper()
	m := map[string]string{}
	err := filepath.WalkDir(tmp, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == root {
			return filepath.SkipDir
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		st := fi.Sys().(*syscall.Stat_t)
		s := fmt.Sprintf("mode=%o uid=%d gid=%d size=%d nlink=%d ino=%d mtime=%d", st.Mode, st.Uid, st.Gid, st.Size, st.Nlink, st.Ino, fi.ModTime().UnixNano())
		if p == tmp {
			s = fmt.Sprintf("mode=%o uid=%d gid=%d", st.Mode, st.Uid, st.Gid) // root's entry changes tmp's mtime
		}
		switch fi.Mode().Type() {
		case 0:
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			s += fmt.Sprintf(" content=%q", b)
		case fs.ModeSymlink:
			target, _ := os.Readlink(p)
			s += " target=" + target
		}
		m[p] = s
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat("/" + hostSentinel); err == nil {
		m["/"+hostSentinel] = "exists"
	}
	return m
}

func assertUnchanged(t testing.TB, before, after map[string]string) {
	t.Helper()
	for _, k := range slices.Sorted(func(yield func(string) bool) {
		seen := map[string]bool{}
		for k := range before {
			seen[k] = true
			if !yield(k) {
				return
			}
		}
		for k := range after {
			if !seen[k] && !yield(k) {
				return
			}
		}
	}) {
		if before[k] != after[k] {
			t.Errorf("outside the root, %s changed:\n  before: %s\n  after:  %s", k, before[k], after[k])
		}
	}
}

// TestHostile applies every layer of testdata/hostile and checks that nothing outside the root
// changed, and that the outcome is the expected clear error or a result confined to the root.
func TestHostile(t *testing.T) {
	requiresRoot(t) // device nodes and owners; the rootless run is in rootless_test.go
	runHostile(t)
}

func runHostile(t *testing.T) {
	for _, c := range hostileCases {
		t.Run(c.name, func(t *testing.T) {
			tmp, root := victimDir(t)
			before := snapshot(t, tmp, root)
			var err error
			for _, data := range hostileLayers(t, c) {
				if err = Apply(t.Context(), root, bytes.NewReader(data)); err != nil {
					break
				}
			}
			assertUnchanged(t, before, snapshot(t, tmp, root))
			if c.wantErr {
				var ee *EntryError
				if !errors.As(err, &ee) {
					t.Fatalf("want an *EntryError, got %v", err)
				}
				t.Logf("error: %v", err)
				return
			}
			if err != nil {
				t.Fatalf("want a confined result, got %v", err)
			}
			if c.check != nil {
				c.check(t, root)
			}
		})
	}
}

func noXattrs(rel string, names ...string) func(t *testing.T, root string) {
	return func(t *testing.T, root string) {
		t.Helper()
		for _, n := range names {
			if _, err := unix.Lgetxattr(filepath.Join(root, rel), n, make([]byte, 64)); err == nil {
				t.Errorf("%s has xattr %s", rel, n)
			}
		}
	}
}

// hostileLayers reads the layers of case c from testdata/hostile.
func hostileLayers(t testing.TB, c hostileCase) [][]byte {
	t.Helper()
	var out [][]byte
	for i := range c.layers {
		name := c.name + ".tar"
		if len(c.layers) > 1 {
			name = fmt.Sprintf("%s.L%d.tar", c.name, i+1)
		}
		data, err := os.ReadFile(filepath.Join("testdata", "hostile", name))
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, data)
	}
	return out
}
