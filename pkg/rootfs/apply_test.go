package rootfs

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/tartest"
	"golang.org/x/sys/unix"
)

type (
	E = tartest.Entry
	L = []tartest.Entry
)

var (
	file    = tartest.File
	dir     = tartest.Dir
	symlink = tartest.Symlink
	link    = tartest.Link
	wh      = tartest.Whiteout
	opaque  = tartest.Opaque
	mode    = tartest.Mode
	owner   = tartest.Owner
)

// TestApplyRules checks the resulting tree of each flattening rule, as root.
func TestApplyRules(t *testing.T) {
	requiresRoot(t)
	tests := []struct {
		name    string
		layers  []L
		want    map[string]string
		wantErr error
	}{
		{
			name:   "regular file, dir, symlink, fifo, char device",
			layers: []L{{dir("d/"), file("d/f", "hi", mode(0o640), owner(12, 34)), symlink("d/l", "/abs/target"), tartest.Fifo("p", mode(0o600)), tartest.Char("null", 1, 3)}},
			want: map[string]string{
				"d": "dir 0755 0:0", "d/f": `file 0640 12:34 "hi"`, "d/l": "symlink /abs/target 0:0",
				"p": "fifo 0600 0:0", "null": "char 1:3 0666 0:0",
			},
		},
		{
			name:   "missing parents created 0755",
			layers: []L{{file("a/b/c", "x")}},
			want:   map[string]string{"a": "dir 0755 0:0", "a/b": "dir 0755 0:0", "a/b/c": `file 0644 0:0 "x"`},
		},
		{
			name:   "absolute and dotted names are relative to root",
			layers: []L{{file("/abs", "1"), file("./dot", "2"), file("a/../b", "3"), dir("./")}},
			want:   map[string]string{"abs": `file 0644 0:0 "1"`, "dot": `file 0644 0:0 "2"`, "b": `file 0644 0:0 "3"`},
		},
		{
			name:   "setuid setgid sticky kept after chown",
			layers: []L{{file("su", "", mode(0o4755), owner(0, 0)), file("sg", "", mode(0o2711), owner(5, 6)), dir("tmp", mode(0o1777))}},
			want:   map[string]string{"su": `file 4755 0:0 ""`, "sg": `file 2711 5:6 ""`, "tmp": "dir 1777 0:0"},
		},
		{
			name: "setgid directory: children still get the owner the layer says",
			layers: []L{{
				dir("sg/", mode(0o2775), owner(0, 50)), file("sg/f", "1"), dir("sg/sub/"), symlink("sg/l", "f"),
				dir("d/", owner(0, 60)), file("d/a", "a"), dir("d/", mode(0o2755), owner(0, 60)), file("d/b", "b"),
				file("sg/implied/x", "x"),
			}},
			want: map[string]string{
				"sg": "dir 2775 0:50", "sg/f": `file 0644 0:0 "1"`, "sg/sub": "dir 0755 0:0", "sg/l": "symlink f 0:0",
				"d": "dir 2755 0:60", "d/a": `file 0644 0:0 "a"`, "d/b": `file 0644 0:0 "b"`,
				"sg/implied": "dir 0755 0:0", "sg/implied/x": `file 0644 0:0 "x"`,
			},
		},
		{
			name:   "cached parent dir replaced by a symlink in the same layer",
			layers: []L{{dir("a/"), file("a/x", "x"), dir("b/"), symlink("a", "b"), file("a/y", "y")}},
			want:   map[string]string{"a": "symlink b 0:0", "b": "dir 0755 0:0", "b/y": `file 0644 0:0 "y"`},
		},
		{
			name: "cached parent through a symlink that is retargeted",
			layers: []L{{
				dir("t/"), symlink("l", "t"), file("l/x", "x"), dir("t2/"), symlink("l", "t2"), file("l/y", "y"),
			}},
			want: map[string]string{
				"t": "dir 0755 0:0", "t/x": `file 0644 0:0 "x"`, "t2": "dir 0755 0:0", "t2/y": `file 0644 0:0 "y"`, "l": "symlink t2 0:0",
			},
		},
		{
			name:   "cached parent whited out and recreated in the same layer",
			layers: []L{{dir("d/"), file("d/old", "o"), file("d/old2", "o")}, {wh("d/old"), wh("d"), dir("d/"), file("d/new", "n")}},
			want:   map[string]string{"d": "dir 0755 0:0", "d/new": `file 0644 0:0 "n"`},
		},
		{
			// OCI image-spec: whiteouts only apply to lower layers. d is the lower directory
			// written into: its lower contents go, this layer's entries (before and after the
			// whiteout) stay, and the later directory entry gives d its metadata.
			name: "whiteout of a directory the same layer wrote into keeps its entries",
			layers: []L{{dir("d/", mode(0o700)), file("d/old", "o"), dir("d/sub/"), file("d/sub/old", "o")},
				{file("d/x", "x"), file("d/sub/y", "y"), wh("d"), dir("d/", mode(0o750)), file("d/new", "n")}},
			want: map[string]string{"d": "dir 0750 0:0", "d/x": `file 0644 0:0 "x"`, "d/new": `file 0644 0:0 "n"`,
				"d/sub": "dir 0755 0:0", "d/sub/y": `file 0644 0:0 "y"`},
		},
		{
			// Not listed by the layer, d (and d/sub) become what Apply creates for an entry
			// below them: 0755, 0:0, no xattrs; the lower ones are hidden.
			name: "whiteout of a directory only written into resets it like an implied parent",
			layers: []L{{dir("d/", mode(0o700), owner(5, 6), tartest.Xattr("user.k", "v")), file("d/old", "o"),
				dir("d/sub/", mode(0o711), owner(7, 7)), file("d/sub/old", "o")},
				{file("d/sub/y", "y"), wh("d")}},
			want: map[string]string{"d": "dir 0755 0:0", "d/sub": "dir 0755 0:0", "d/sub/y": `file 0644 0:0 "y"`},
		},
		{
			name:   "whiteout of a directory the same layer listed keeps its entry's metadata",
			layers: []L{{dir("d/"), file("d/old", "o")}, {dir("d/", mode(0o700), owner(3, 3)), wh("d")}},
			want:   map[string]string{"d": "dir 0700 3:3"},
		},
		{
			name:   "whiteout before the entry removes the lower one first",
			layers: []L{{dir("d/", mode(0o700)), file("d/old", "o"), file("f", "lower")}, {wh("d"), wh("f"), file("d/x", "x"), file("f", "upper")}},
			want:   map[string]string{"d": "dir 0755 0:0", "d/x": `file 0644 0:0 "x"`, "f": `file 0644 0:0 "upper"`},
		},
		{
			// What the layer created is keyed by where it really is: its entry written through
			// the symlink is its own under the directory's real name too.
			name: "opaque marker under another name than the entries written through a symlink",
			layers: []L{{dir("real/"), file("real/old", "o"), symlink("lnk", "real"), dir("r2/"), file("r2/old", "o"), symlink("l2", "/r2")},
				{file("lnk/new", "n"), opaque("real"), file("r2/new", "n"), opaque("l2")}},
			want: map[string]string{"real": "dir 0755 0:0", "real/new": `file 0644 0:0 "n"`, "lnk": "symlink real 0:0",
				"r2": "dir 0755 0:0", "r2/new": `file 0644 0:0 "n"`, "l2": "symlink /r2 0:0"},
		},
		{
			name:   "whiteout under another name than the entries written through a symlink",
			layers: []L{{dir("real/"), file("real/old", "o"), symlink("lnk", "real")}, {file("lnk/new", "n"), wh("real")}},
			want:   map[string]string{"real": "dir 0755 0:0", "real/new": `file 0644 0:0 "n"`, "lnk": "symlink real 0:0"},
		},
		{
			name:   "opaque resets directories only written into",
			layers: []L{{dir("d/"), dir("d/s/", mode(0o700), owner(5, 5)), file("d/s/old", "o")}, {file("d/s/y", "y"), opaque("d")}},
			want:   map[string]string{"d": "dir 0755 0:0", "d/s": "dir 0755 0:0", "d/s/y": `file 0644 0:0 "y"`},
		},
		{
			name:   "hardlink to a lower file replaced earlier in the same layer",
			layers: []L{{file("a", "old")}, {file("a", "new"), link("b", "a")}},
			want:   map[string]string{"a": `file 0644 0:0 "new"`, "b": `file 0644 0:0 "new"`},
		},
		{
			name:   "whiteout after a same-layer entry keeps it",
			layers: []L{{file("x", "x"), wh("x")}},
			want:   map[string]string{"x": `file 0644 0:0 "x"`},
		},
		{
			name: "whiteout after a same-layer replacement keeps it, the lower one is gone",
			layers: []L{{file("f", "lower"), dir("d/"), file("d/in", "i"), symlink("s", "f")},
				{file("f", "upper"), wh("f"), symlink("d", "f"), wh("d"), file("s", "now a file"), wh("s")}},
			want: map[string]string{"f": `file 0644 0:0 "upper"`, "d": "symlink f 0:0", "s": `file 0644 0:0 "now a file"`},
		},
		{
			name:   "opaque keeps implied parents of same-layer entries but not their lower contents",
			layers: []L{{file("d/a", "a"), file("d/s/b", "b")}, {opaque("d"), file("d/s/c", "c")}},
			want:   map[string]string{"d": "dir 0755 0:0", "d/s": "dir 0755 0:0", "d/s/c": `file 0644 0:0 "c"`},
		},
		{
			name:   "opaque marker of a directory that does not exist",
			layers: []L{{file("a", "1")}, {opaque("nope")}},
			want:   map[string]string{"a": `file 0644 0:0 "1"`},
		},
		{
			name:   "whiteout file and dir",
			layers: []L{{file("a", "1"), file("d/x", "2"), file("d/y", "3"), file("keep", "4")}, {wh("a"), wh("d")}},
			want:   map[string]string{"keep": `file 0644 0:0 "4"`},
		},
		{
			name:   "whiteout a symlink removes the link not its target",
			layers: []L{{file("t", "1"), symlink("s", "t"), dir("dd/"), file("dd/x", "2"), symlink("sd", "dd")}, {wh("s"), wh("sd")}},
			want:   map[string]string{"t": `file 0644 0:0 "1"`, "dd": "dir 0755 0:0", "dd/x": `file 0644 0:0 "2"`},
		},
		{
			name: "whiteout dir then recreate (A12)",
			layers: []L{
				{dir("test/"), file("test/secret", "s")},
				{wh("test")},
				{dir("test/"), file("test/new", "n")},
			},
			want: map[string]string{"test": "dir 0755 0:0", "test/new": `file 0644 0:0 "n"`},
		},
		{
			name:   "whiteout of missing path or under missing dir is a no-op",
			layers: []L{{file("a", "1")}, {wh("nope"), wh("no/such/thing")}},
			want:   map[string]string{"a": `file 0644 0:0 "1"`},
		},
		{
			name: "opaque before same-layer files",
			layers: []L{
				{dir("d/"), file("d/lower", "l"), dir("d/sub/"), file("d/sub/deep", "x"), file("other", "o")},
				{dir("d/"), opaque("d"), file("d/new", "n")},
			},
			want: map[string]string{"d": "dir 0755 0:0", "d/new": `file 0644 0:0 "n"`, "other": `file 0644 0:0 "o"`},
		},
		{
			name: "opaque after same-layer files",
			layers: []L{
				{dir("d/"), file("d/lower", "l"), dir("d/sub/"), file("d/sub/deep", "x")},
				{dir("d/"), file("d/new", "n"), dir("d/sub/"), file("d/sub/new2", "m"), opaque("d")},
			},
			want: map[string]string{
				"d": "dir 0755 0:0", "d/new": `file 0644 0:0 "n"`, "d/sub": "dir 0755 0:0", "d/sub/new2": `file 0644 0:0 "m"`,
			},
		},
		{
			name:   "opaque at the root",
			layers: []L{{file("a", "1"), dir("b/")}, {file("c", "3"), opaque("")}},
			want:   map[string]string{"c": `file 0644 0:0 "3"`},
		},
		{
			name:   "whiteout meta names are skipped, never created",
			layers: []L{{file("a", "1")}, {tartest.File(".wh..wh.plnk", ""), tartest.File("d/.wh..wh.aufs", "")}},
			want:   map[string]string{"a": `file 0644 0:0 "1"`},
		},
		{
			name: "file to dir to symlink to file across layers (A13)",
			layers: []L{
				{file("x", "f"), dir("y/"), file("y/in", "i"), symlink("z", "/y")},
				{dir("x/"), file("x/in", "2"), symlink("y", "x"), file("z", "now a file")},
				{file("x", "file again"), dir("y/")},
			},
			want: map[string]string{"x": `file 0644 0:0 "file again"`, "y": "dir 0755 0:0", "z": `file 0644 0:0 "now a file"`},
		},
		{
			name: "lower dir replaced by symlink, then write goes through it in-root",
			layers: []L{
				{dir("lib/"), file("lib/old", "o"), dir("usr/lib/")},
				{symlink("lib", "/usr/lib")},
				{file("lib/x", "via link")},
			},
			want: map[string]string{"lib": "symlink /usr/lib 0:0", "usr": "dir 0755 0:0", "usr/lib": "dir 0755 0:0", "usr/lib/x": `file 0644 0:0 "via link"`},
		},
		{
			name:   "directory over directory keeps contents, updates metadata",
			layers: []L{{dir("d/", mode(0o700)), file("d/f", "1")}, {dir("d/", mode(0o750), owner(3, 4))}},
			want:   map[string]string{"d": "dir 0750 3:4", "d/f": `file 0644 0:0 "1"`},
		},
		{
			name: "duplicate entries: last wins (A19)",
			layers: []L{{
				file("p", "first"), symlink("p", "/etc/passwd"), file("p", "last"),
				dir("q/"), file("q/x", "1"), file("q", "q is a file"),
			}},
			want: map[string]string{"p": `file 0644 0:0 "last"`, "q": `file 0644 0:0 "q is a file"`},
		},
		{
			name:   "hardlink within a layer and to a lower layer",
			layers: []L{{file("lower", "L", mode(0o600))}, {file("a", "A"), link("b", "a"), link("c", "/lower"), link("dir/d", "lower")}},
			want: map[string]string{
				"lower": `file 0600 0:0 "L"`, "a": `file 0644 0:0 "A"`, "b": `file 0644 0:0 "A"`,
				"c": `file 0600 0:0 "L"`, "dir": "dir 0755 0:0", "dir/d": `file 0600 0:0 "L"`,
			},
		},
		{
			name:   "hardlink to a symlink links the symlink itself (A6)",
			layers: []L{{symlink("s", "/etc/shadow"), link("h", "s", mode(0o777))}},
			want:   map[string]string{"s": "symlink /etc/shadow 0:0", "h": "symlink /etc/shadow 0:0"},
		},
		{
			name:    "hardlink to a directory is refused",
			layers:  []L{{dir("d/"), link("h", "d")}},
			wantErr: ErrUnsupportedEntry,
		},
		{
			name:    "hardlink to a missing target fails",
			layers:  []L{{link("h", "nope")}},
			wantErr: unix.ENOENT,
		},
		{
			name:    "parent is a file",
			layers:  []L{{file("f", "1"), file("f/x", "2")}},
			wantErr: unix.ENOTDIR,
		},
		{
			name:    "unknown type rejected",
			layers:  []L{{tartest.Raw('Z', "zz")}},
			wantErr: ErrUnsupportedEntry,
		},
		{
			// The walk of a directory this layer made is skipped; one it only listed again is not.
			name: "opaque markers in made and in listed lower directories",
			layers: []L{{dir("d/"), file("d/old", "o"), dir("e/"), dir("e/s/"), file("e/s/old", "o")},
				{wh("d"), dir("d/"), opaque("d"), file("d/n", "n"), dir("d/s/"), file("d/s/f", "f"), file("d/i/g", "g"),
					dir("e/"), opaque("e"), file("e/n", "n"), file("e/s/n", "n")}},
			want: map[string]string{"d": "dir 0755 0:0", "d/n": `file 0644 0:0 "n"`, "d/s": "dir 0755 0:0", "d/s/f": `file 0644 0:0 "f"`,
				"d/i": "dir 0755 0:0", "d/i/g": `file 0644 0:0 "g"`,
				"e": "dir 0755 0:0", "e/n": `file 0644 0:0 "n"`, "e/s": "dir 0755 0:0", "e/s/n": `file 0644 0:0 "n"`},
		},
		{
			// The marker was read while a named a directory this layer made; at the end a names
			// the lower b, whose lower contents the marker hides.
			name:   "opaque marker in a made directory later replaced by a symlink to a lower one",
			layers: []L{{dir("b/"), file("b/old", "o")}, {dir("a/"), opaque("a"), file("a/x", "x"), symlink("a", "b"), file("b/n", "n")}},
			want:   map[string]string{"a": "symlink b 0:0", "b": "dir 0755 0:0", "b/n": `file 0644 0:0 "n"`},
		},
		{
			name:   "directory replaced by a file in the same layer keeps the file",
			layers: []L{{dir("d/", mode(0o700)), file("d/x", "x"), file("d", "f", mode(0o600))}},
			want:   map[string]string{"d": `file 0600 0:0 "f"`},
		},
		{
			name:   "GNU volume header and PAX global header skipped",
			layers: []L{{tartest.Raw('V', "volume"), tartest.Global(map[string]string{"comment": "x"}), file("a", "1")}},
			want:   map[string]string{"a": `file 0644 0:0 "1"`},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			err := applyLayers(t, root, tc.layers)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				var ee *EntryError
				if !errors.As(err, &ee) {
					t.Fatalf("err %v is not an *EntryError", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if d := diffTrees(tree(t, root), tc.want); d != "" {
				t.Errorf("tree differs:\n%s", d)
			}
		})
	}
}

func TestApplyRejectsUnsafeNames(t *testing.T) {
	for _, name := range []string{"", "..", "../x", "a/../../x", "/../x", "a/..", "a/.", ".wh..", ".wh...", "d/.wh..", ".wh.", "../.wh.x", "a/.wh.b/c"} {
		t.Run(name, func(t *testing.T) {
			root := t.TempDir()
			err := Apply(t.Context(), root, tartest.Reader(file(name, "x")))
			if !errors.Is(err, ErrUnsafePath) {
				t.Fatalf("err = %v, want ErrUnsafePath", err)
			}
			var ee *EntryError
			if !errors.As(err, &ee) || ee.Name != name {
				t.Fatalf("err = %#v, want *EntryError naming %q", err, name)
			}
		})
	}
}

func TestApplyRootEntries(t *testing.T) {
	for _, tc := range []struct {
		entry   E
		wantErr bool
	}{
		{dir("./", mode(0o711)), false},
		{dir("/", mode(0o711)), false},
		{symlink(".", "/tmp"), true},
		{symlink("./", "/tmp"), true},
		{file(".", "x"), true},
		{link(".", "a"), true},
	} {
		t.Run(tc.entry.Header.Name+string(tc.entry.Header.Typeflag), func(t *testing.T) {
			root := t.TempDir()
			err := Apply(t.Context(), root, tartest.Reader(tc.entry))
			if tc.wantErr != errors.Is(err, ErrUnsafePath) {
				t.Fatalf("err = %v", err)
			}
			fi, err := os.Lstat(root)
			if err != nil || !fi.IsDir() {
				t.Fatalf("root is no longer a directory: %v %v", fi, err)
			}
			if !tc.wantErr && fi.Mode().Perm() != 0o711 {
				t.Errorf("root mode %v, want 0711", fi.Mode().Perm())
			}
		})
	}
}

func TestApplyHardlinkInodes(t *testing.T) {
	root := t.TempDir()
	err := applyLayers(t, root, []L{{file("lower", "L")}, {file("a", "A"), link("b", "a"), link("c", "lower")}})
	if err != nil {
		t.Fatal(err)
	}
	ino := func(p string) uint64 {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	if ino("a") != ino("b") {
		t.Error("a and b do not share an inode")
	}
	if ino("c") != ino("lower") {
		t.Error("c and lower do not share an inode")
	}
	if ino("a") == ino("lower") {
		t.Error("a and lower share an inode")
	}
}

func TestApplyTimes(t *testing.T) {
	t1 := time.Date(2001, 2, 3, 4, 5, 6, 7000, time.UTC)
	t2 := time.Date(2011, 2, 3, 4, 5, 6, 0, time.UTC)
	root := t.TempDir()
	layer := L{
		dir("d/", tartest.MTime(t1)),
		file("d/f", "x", tartest.MTime(t2)),
		dir("d/sub/", tartest.MTime(t2)),
		file("d/sub/g", "y", tartest.MTime(t1)),
		symlink("d/l", "nowhere", tartest.MTime(t2)),
		dir("e/", tartest.MTime(t1)),
	}
	// A whiteout in e after its directory entry must not disturb e's mtime either.
	layer = append(layer, file("e/gone", ""), wh("e/gone"))
	// A second layer writes into d/sub and lists it with a new time; e is only written into.
	t3 := time.Date(2021, 1, 1, 0, 0, 0, 0, time.UTC)
	upper := L{dir("d/sub/", tartest.MTime(t3)), file("d/sub/h", "z", tartest.MTime(t1)), wh("d/sub/g"), dir("new/", tartest.MTime(t3)), file("new/x", "", tartest.MTime(t2))}
	if err := applyLayers(t, root, []L{layer, upper}); err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]time.Time{"d": t1, "d/f": t2, "d/sub": t3, "d/sub/h": t1, "d/l": t2, "e": t1, "new": t3, "new/x": t2} {
		fi, err := os.Lstat(filepath.Join(root, p))
		if err != nil {
			t.Fatal(err)
		}
		if !fi.ModTime().Equal(want) {
			t.Errorf("%s mtime %v, want %v", p, fi.ModTime().UTC(), want)
		}
	}
}

func TestApplyXattrs(t *testing.T) {
	requiresRoot(t)
	root := t.TempDir()
	x := tartest.Xattr
	err := applyLayers(t, root, []L{{
		file("f", "x", x("user.keep", "1"), x("user.overlay.opaque", "y"), x("trusted.overlay.opaque", "y"),
			x("security.selinux", "system_u:object_r:etc_t:s0"), x("trusted.evil", "1"), x("security.capability", "\x01\x00\x00\x02\x00\x20\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00")),
		dir("d/", x("user.dir", "2")),
	}})
	if err != nil {
		t.Fatal(err)
	}
	get := func(p, name string) (string, error) {
		buf := make([]byte, 256)
		n, err := unix.Lgetxattr(filepath.Join(root, p), name, buf)
		if err != nil {
			return "", err
		}
		return string(buf[:n]), nil
	}
	if v, err := get("f", "user.keep"); err != nil || v != "1" {
		t.Errorf("user.keep = %q, %v", v, err)
	}
	if v, err := get("d", "user.dir"); err != nil || v != "2" {
		t.Errorf("user.dir = %q, %v", v, err)
	}
	if _, err := get("f", "security.capability"); err != nil {
		t.Errorf("security.capability: %v", err)
	}
	for _, name := range []string{"user.overlay.opaque", "trusted.overlay.opaque", "trusted.evil"} {
		if v, err := get("f", name); err == nil {
			t.Errorf("%s was written (%q)", name, v)
		}
	}
	if v, err := get("f", "security.selinux"); err == nil && v == "system_u:object_r:etc_t:s0" {
		t.Errorf("security.selinux from the layer was written")
	}
}

func TestApplyLimits(t *testing.T) {
	for _, tc := range []struct {
		name  string
		lim   Limits
		layer L
	}{
		{"entries", Limits{MaxEntries: 2}, L{file("a", ""), file("b", ""), file("c", "")}},
		{"file size", Limits{MaxFileSize: 3}, L{file("a", "1234")}},
		{"total", Limits{MaxTotalBytes: 5}, L{file("a", "123"), file("b", "456")}},
		{"path length", Limits{MaxPathLen: 10}, L{file("aaaaa/bbbbbbb", "")}},
		{"depth", Limits{MaxPathDepth: 3}, L{file("a/b/c/d", "")}},
		{"xattr", Limits{MaxXattrSize: 4}, L{file("a", "", tartest.Xattr("user.big", "12345"))}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Apply(t.Context(), t.TempDir(), tartest.Reader(tc.layer...), WithLimits(tc.lim))
			if !errors.Is(err, ErrLimit) {
				t.Fatalf("err = %v, want ErrLimit", err)
			}
		})
	}
}

func TestApplyBadStreams(t *testing.T) {
	full := tartest.Tar(file("a", string(make([]byte, 4096))), file("b", "2"))
	for _, tc := range []struct {
		name string
		data []byte
	}{
		{"truncated in body", full[:1024]},
		{"truncated in header", full[:512+4096+100]},
		{"garbage", []byte("this is not a tar file, not at all; it is long enough to fill a header block? no.............................................................................................................................................................................................................................................................................................................................................................................................................................................................")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Apply(t.Context(), t.TempDir(), bytesReader(tc.data))
			if err == nil {
				t.Fatal("no error")
			}
		})
	}
}

func TestApplyCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := Apply(ctx, t.TempDir(), tartest.Reader(file("a", "1")))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

func bytesReader(b []byte) *bytes.Reader { return bytes.NewReader(b) }

func TestApplyRejectsSparse(t *testing.T) {
	// Old GNU sparse headers fail in archive/tar or here. (archive/tar's writer cannot emit PAX
	// sparse records, so that path is covered by FuzzApply only.)
	for _, layer := range []L{
		{tartest.Raw('S', "sparse")},
	} {
		root := t.TempDir()
		data, err := func() (b []byte, err error) {
			defer func() {
				if recover() != nil {
					err = errors.New("cannot build")
				}
			}()
			return tartest.Tar(layer...), nil
		}()
		if err != nil {
			continue // the writer refuses it: nothing to apply
		}
		if err := Apply(t.Context(), root, bytesReader(data)); err == nil {
			t.Errorf("%s: sparse entry applied", layer[0].Header.Name)
		}
	}
}

func TestCleanName(t *testing.T) {
	for in, want := range map[string]string{
		"a": "a", "/a": "a", "./a/": "a", "a//b/./c": "a/b/c", "a/../b": "b", ".": ".", "./": ".", "/": ".", "//": ".",
		"": "!", "..": "!", "../a": "!", "/../a": "!", "a/../..": "!", "a/b/..": "!", "a/.": "!", "x\x00": "!",
	} {
		got, err := cleanName(in)
		if err != nil {
			got = "!"
			if !errors.Is(err, ErrUnsafePath) {
				t.Errorf("cleanName(%q) error %v is not ErrUnsafePath", in, err)
			}
		}
		if got != want {
			t.Errorf("cleanName(%q) = %q, want %q", in, got, want)
		}
	}
}

// paxRaw builds a one-file tar whose PAX header carries records archive/tar's writer refuses to
// write (GNU.sparse.*): the 'x' block is written as a plain file and retyped.
func paxRaw(t *testing.T, name string, records map[string]string, body string) []byte {
	t.Helper()
	var rec strings.Builder
	for _, k := range slices.Sorted(maps.Keys(records)) {
		line := " " + k + "=" + records[k] + "\n"
		n := len(line)
		for len(strconv.Itoa(n+len(strconv.Itoa(n)))) != len(strconv.Itoa(n)) {
			n++
		}
		n += len(strconv.Itoa(n))
		rec.WriteString(strconv.Itoa(n) + line)
	}
	ext := tartest.Tar(tartest.File("PaxHeaders/"+name, rec.String(), func(e *tartest.Entry) { e.Header.Format = tar.FormatUSTAR }))
	ext = ext[:len(ext)-1024] // drop the end-of-archive blocks
	ext[156] = 'x'
	copy(ext[148:156], "        ")
	var sum int
	for _, c := range ext[:512] {
		sum += int(c)
	}
	copy(ext[148:156], fmt.Sprintf("%06o\x00 ", sum))
	main := tartest.Tar(tartest.File(name, body, func(e *tartest.Entry) { e.Header.Format = tar.FormatUSTAR }))
	return append(ext, main...)
}

func TestApplyRejectsPAXSparse(t *testing.T) {
	for name, rec := range map[string]map[string]string{
		"sparse-1.0": {"GNU.sparse.major": "1", "GNU.sparse.minor": "0", "GNU.sparse.name": "s", "GNU.sparse.realsize": "8"},
		"sparse-0.1": {"GNU.sparse.numblocks": "1", "GNU.sparse.offset": "0", "GNU.sparse.numbytes": "1", "GNU.sparse.map": "0,1", "GNU.sparse.size": "8"},
	} {
		t.Run(name, func(t *testing.T) {
			body := "1\n0\n1\n" + strings.Repeat("\x00", 512-6) + "x"
			if name == "sparse-0.1" {
				body = "x"
			}
			data := paxRaw(t, "s", rec, body)
			_, parseErr := tar.NewReader(bytes.NewReader(data)).Next()
			root := t.TempDir()
			err := Apply(t.Context(), root, bytes.NewReader(data))
			switch {
			case err == nil:
				t.Fatal("sparse entry applied")
			case parseErr == nil && !errors.Is(err, ErrUnsupportedEntry):
				t.Fatalf("err = %v, want ErrUnsupportedEntry", err)
			}
			if _, err := os.Lstat(filepath.Join(root, "s")); err == nil {
				t.Error("sparse file created")
			}
		})
	}
}

// TestApplyWhiteoutResetDropsXattrs checks that a lower directory that a layer only wrote into
// and then whited out loses the xattrs of the lower one, as a directory Apply creates has none.
func TestApplyWhiteoutResetDropsXattrs(t *testing.T) {
	root := t.TempDir()
	layers := []L{
		{dir("d/", mode(0o555), owner(5, 5), tartest.Xattr("user.lower", "v")), file("d/old", "o"), dir("e/", tartest.Xattr("user.keep", "v"))},
		{file("d/new", "n"), wh("d"), file("e/new", "n"), opaque("e")},
	}
	if err := applyLayers(t, root, layers); err != nil {
		t.Fatal(err)
	}
	for _, x := range []string{"user.lower", rootlessXattr} {
		if _, err := unix.Lgetxattr(filepath.Join(root, "d"), x, make([]byte, 8)); err != unix.ENODATA {
			t.Errorf("d: %s: %v, want ENODATA", x, err)
		}
	}
	// Like a directory Apply creates: 0755, owned by root (rootless: by us).
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(root, "d"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Mode&0o7777 != 0o755 || (os.Geteuid() == 0 && (st.Uid != 0 || st.Gid != 0)) {
		t.Errorf("d: mode %04o owner %d:%d, want 0755 0:0", st.Mode&0o7777, st.Uid, st.Gid)
	}
	// An opaque directory itself is kept with its metadata.
	if _, err := unix.Lgetxattr(filepath.Join(root, "e"), "user.keep", make([]byte, 8)); err != nil {
		t.Errorf("e: user.keep: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "d/old")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("d/old: %v, want it gone", err)
	}
}
