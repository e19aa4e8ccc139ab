package rootfs_test

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/internal/testimage"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

type tl = []tartest.Entry

var (
	tFile    = tartest.File
	tDir     = tartest.Dir
	tSymlink = tartest.Symlink
	tLink    = tartest.Link
	tWh      = tartest.Whiteout
	tOpaque  = tartest.Opaque
	tMode    = tartest.Mode
	tOwner   = tartest.Owner
)

// trickyImages is the conformance corpus: multi-layer images (lowest layer first) whose
// flattening trips up existing tools. want, when set, is the hand-written result (as
// flatDesc strings, owners only as root); every case is also checked Export against Flatten.
var trickyImages = []struct {
	name   string
	layers []tl
	want   map[string]string
}{
	{
		name: "whiteout file",
		layers: []tl{
			{tDir("a"), tFile("a/x", "x"), tFile("a/y", "y")},
			{tWh("a/x")},
		},
		want: map[string]string{"a": "dir 0755 0:0", "a/y": `file 0644 0:0 "y"`},
	},
	{
		name: "delete then recreate in a later layer (A12)",
		layers: []tl{
			{tDir("test"), tFile("test/secret", "s")},
			{tWh("test")},
			{tDir("test", tMode(0o700))},
		},
		want: map[string]string{"test": "dir 0700 0:0"},
	},
	{
		name: "delete and recreate in one layer",
		layers: []tl{
			{tDir("test"), tFile("test/secret", "s")},
			{tWh("test"), tDir("test"), tFile("test/new", "n")},
		},
		want: map[string]string{"test": "dir 0755 0:0", "test/new": `file 0644 0:0 "n"`},
	},
	{
		name: "opaque marker after its layer's entries",
		layers: []tl{
			{tDir("d"), tFile("d/a", "a"), tDir("d/sub"), tFile("d/sub/b", "b")},
			{tDir("d"), tFile("d/c", "c"), tOpaque("d")},
		},
		want: map[string]string{"d": "dir 0755 0:0", "d/c": `file 0644 0:0 "c"`},
	},
	{
		name: "opaque root",
		layers: []tl{
			{tFile("old", "o"), tDir("etc"), tFile("etc/x", "x")},
			{tOpaque(""), tFile("new", "n")},
		},
		want: map[string]string{"new": `file 0644 0:0 "n"`},
	},
	{
		name: "nested opaque and whiteout",
		layers: []tl{
			{tDir("a"), tDir("a/b"), tFile("a/b/c", "c")},
			{tOpaque("a"), tDir("a/b"), tFile("a/b/d", "d")},
			{tWh("a/b/d")},
		},
		want: map[string]string{"a": "dir 0755 0:0", "a/b": "dir 0755 0:0"},
	},
	{
		name: "type changes (A13)",
		layers: []tl{
			{tFile("f2d", "f"), tDir("d2f"), tFile("d2f/a", "a"), tDir("d2s"), tFile("d2s/a", "a"),
				tSymlink("s2d", "elsewhere"), tFile("f2s", "f"), tDir("usr"), tDir("usr/lib")},
			{tDir("f2d"), tFile("f2d/y", "y"), tFile("d2f", "now a file"), tSymlink("d2s", "usr/lib"),
				tDir("s2d"), tFile("s2d/f", "f"), tSymlink("f2s", "/etc/passwd")},
		},
		want: map[string]string{
			"f2d": "dir 0755 0:0", "f2d/y": `file 0644 0:0 "y"`, "d2f": `file 0644 0:0 "now a file"`,
			"d2s": `symlink 0000 0:0 "usr/lib"`, "s2d": "dir 0755 0:0", "s2d/f": `file 0644 0:0 "f"`,
			"f2s": `symlink 0000 0:0 "/etc/passwd"`, "usr": "dir 0755 0:0", "usr/lib": "dir 0755 0:0",
		},
	},
	{
		name: "hard link within a layer",
		layers: []tl{
			{tFile("a", "content"), tLink("b", "a")},
		},
		want: map[string]string{"a": `file 0644 0:0 "content" =a`, "b": `file 0644 0:0 "content" =a`},
	},
	{
		name: "hard link to a lower layer's file (ggcr #977)",
		layers: []tl{
			{tFile("a", "lower")},
			{tLink("b", "a")},
		},
		want: map[string]string{"a": `file 0644 0:0 "lower" =a`, "b": `file 0644 0:0 "lower" =a`},
	},
	{
		name: "hard link chain across layers (ggcr #2002)",
		layers: []tl{
			{tDir("bin"), tFile("bin/a", "A")},
			{tLink("bin/b", "bin/a")},
			{tLink("bin/c", "bin/b")},
		},
		want: map[string]string{"bin": "dir 0755 0:0", "bin/a": `file 0644 0:0 "A" =bin/a`,
			"bin/b": `file 0644 0:0 "A" =bin/a`, "bin/c": `file 0644 0:0 "A" =bin/a`},
	},
	{
		name: "link target replaced above keeps the old content",
		layers: []tl{
			{tFile("a", "old")},
			{tLink("b", "a")},
			{tFile("a", "new")},
		},
		want: map[string]string{"a": `file 0644 0:0 "new"`, "b": `file 0644 0:0 "old"`},
	},
	{
		name: "link target deleted above",
		layers: []tl{
			{tFile("a", "old")},
			{tLink("b", "a"), tLink("c", "a")},
			{tWh("a")},
		},
		want: map[string]string{"b": `file 0644 0:0 "old" =b`, "c": `file 0644 0:0 "old" =b`},
	},
	{
		name: "same-layer link whose target is replaced above (reread)",
		layers: []tl{
			{tFile("a", "old"), tLink("b", "a")},
			{tFile("a", "new")},
		},
		want: map[string]string{"a": `file 0644 0:0 "new"`, "b": `file 0644 0:0 "old"`},
	},
	{
		name: "links from two layers to a deleted file",
		layers: []tl{
			{tFile("a", "A", tMode(0o4755)), tLink("b", "a"), tLink("c", "a")},
			{tWh("a"), tLink("d", "b")},
		},
		want: map[string]string{"b": `file 4755 0:0 "A" =b`, "c": `file 4755 0:0 "A" =b`, "d": `file 4755 0:0 "A" =b`},
	},
	{
		name: "link to a lower file replaced in between",
		layers: []tl{
			{tFile("a", "v1")},
			{tFile("a", "v2")},
			{tLink("b", "a")},
		},
		want: map[string]string{"a": `file 0644 0:0 "v2" =a`, "b": `file 0644 0:0 "v2" =a`},
	},
	{
		name: "link through a link whose target is gone",
		layers: []tl{
			{tFile("a", "A")},
			{tLink("b", "a")},
			{tLink("c", "b"), tWh("a")},
		},
		want: map[string]string{"b": `file 0644 0:0 "A" =b`, "c": `file 0644 0:0 "A" =b`},
	},
	{
		name: "hard link to a symlink",
		layers: []tl{
			{tSymlink("s", "target"), tLink("h", "s")},
		},
		want: map[string]string{"s": `symlink 0000 0:0 "target" =h`, "h": `symlink 0000 0:0 "target" =h`},
	},
	{
		name: "duplicates in one layer: the last wins (A19)",
		layers: []tl{
			{tDir("d", tMode(0o700)), tDir("d", tMode(0o750)), tFile("f", "1"), tFile("f", "2"),
				tFile("s", "file"), tSymlink("s", "x")},
		},
		want: map[string]string{"d": "dir 0750 0:0", "f": `file 0644 0:0 "2"`, "s": `symlink 0000 0:0 "x"`},
	},
	{
		name: "implied parents, modes, owners",
		layers: []tl{
			{tFile("a/b/c", "c", tOwner(1000, 1001), tMode(0o600)), tDir("t", tMode(0o1777)),
				tFile("g", "g", tMode(0o2755), tOwner(0, 50))},
		},
		want: map[string]string{"a": "dir 0755 0:0", "a/b": "dir 0755 0:0", "a/b/c": `file 0600 1000:1001 "c"`,
			"t": "dir 1777 0:0", "g": `file 2755 0:50 "g"`},
	},
	{
		name: "whiteout of a symlink and aufs metadata",
		layers: []tl{
			{tSymlink("s", "/etc"), tDir("keep")},
			{tWh("s"), tFile(".wh..wh.plnk", ""), tFile("keep/.wh..wh.aufs", "")},
		},
		want: map[string]string{"keep": "dir 0755 0:0"},
	},
	{
		name: "fifo",
		layers: []tl{
			{tartest.Fifo("p", tMode(0o600))},
		},
		want: map[string]string{"p": "fifo 0600 0:0"},
	},
	// Whiteouts apply only to lower layers (OCI image-spec layer.md): entries of the
	// whiteout's own layer stay, wherever the whiteout is.
	{
		name: "same-layer whiteout after a file, symlink and new directory keeps them",
		layers: []tl{
			{tFile("f", "lower"), tSymlink("s", "f"), tDir("d"), tFile("d/in", "i")},
			{tFile("f", "upper"), tWh("f"), tFile("s", "now a file"), tWh("s"), tSymlink("d", "f"), tWh("d"),
				tDir("n"), tFile("n/a", "a"), tWh("n")},
		},
		want: map[string]string{"f": `file 0644 0:0 "upper"`, "s": `file 0644 0:0 "now a file"`, "d": `symlink 0000 0:0 "f"`,
			"n": "dir 0755 0:0", "n/a": `file 0644 0:0 "a"`},
	},
	{
		name: "same-layer whiteout of a directory the layer wrote into and lists",
		layers: []tl{
			{tDir("d", tMode(0o700)), tFile("d/old", "o"), tDir("d/sub"), tFile("d/sub/old", "o")},
			{tFile("d/x", "x"), tFile("d/sub/y", "y"), tWh("d"), tDir("d", tMode(0o750)), tFile("d/new", "n")},
		},
		want: map[string]string{"d": "dir 0750 0:0", "d/x": `file 0644 0:0 "x"`, "d/new": `file 0644 0:0 "n"`,
			"d/sub": "dir 0755 0:0", "d/sub/y": `file 0644 0:0 "y"`},
	},
	{
		name: "same-layer whiteout of a directory only written into",
		layers: []tl{
			{tDir("d", tMode(0o700), tOwner(5, 6), tartest.Xattr("user.k", "v")), tFile("d/old", "o"),
				tDir("d/sub", tMode(0o711), tOwner(7, 7)), tFile("d/sub/old", "o")},
			{tFile("d/sub/y", "y"), tWh("d")},
		},
		want: map[string]string{"d": "dir 0755 0:0", "d/sub": "dir 0755 0:0", "d/sub/y": `file 0644 0:0 "y"`},
	},
	{
		name: "same-layer whiteout of a directory the layer listed first",
		layers: []tl{
			{tDir("d"), tFile("d/old", "o")},
			{tDir("d", tMode(0o700), tOwner(3, 3)), tWh("d")},
		},
		want: map[string]string{"d": "dir 0700 3:3"},
	},
	{
		name: "whiteouts before their entries",
		layers: []tl{
			{tDir("d", tMode(0o700)), tFile("d/old", "o"), tFile("f", "lower")},
			{tWh("d"), tWh("f"), tFile("d/x", "x"), tFile("f", "upper")},
		},
		want: map[string]string{"d": "dir 0755 0:0", "d/x": `file 0644 0:0 "x"`, "f": `file 0644 0:0 "upper"`},
	},
	{
		name: "opaque directory below a directory only written into",
		layers: []tl{
			{tDir("d"), tDir("d/s", tMode(0o700), tOwner(5, 5)), tFile("d/s/old", "o")},
			{tFile("d/s/y", "y"), tOpaque("d")},
		},
		want: map[string]string{"d": "dir 0755 0:0", "d/s": "dir 0755 0:0", "d/s/y": `file 0644 0:0 "y"`},
	},
}

// testimageLayers converts pkg/internal/testimage layers.
func testimageLayers(t testing.TB, ls [][]testimage.Entry) []rootfs.Layer {
	out := make([]rootfs.Layer, len(ls))
	for i, es := range ls {
		out[i] = memLayer(testimage.TarBytes(t, es...))
	}
	return out
}

func ownersOff(want map[string]string) map[string]string {
	if os.Geteuid() == 0 {
		return want
	}
	out := map[string]string{}
	for k, v := range want {
		f := strings.Fields(v)
		if len(f) > 2 && strings.Contains(f[2], ":") {
			f = append(f[:2], f[3:]...)
		}
		out[k] = strings.Join(f, " ")
	}
	return out
}

// TestExportMatchesFlatten checks the exported tar against the tree Flatten builds from the
// same layers (two independent algorithms: a top-down single pass over the tars, and Apply on
// disk), and against the hand-written result where there is one.
func TestExportMatchesFlatten(t *testing.T) {
	// Rootless, Flatten cannot set owners: the descriptions then leave them out.
	for _, tc := range trickyImages {
		t.Run(tc.name, func(t *testing.T) {
			layers := memLayers(tc.layers...)
			exported := tarTree(t, exportBytes(t, layers))
			flat := flattenTree(t, layers)
			if d := diffMaps(exported, flat); d != "" {
				t.Errorf("export differs from Flatten:\n%s", d)
			}
			if tc.want != nil {
				if d := diffMaps(exported, ownersOff(tc.want)); d != "" {
					t.Errorf("export differs from the expected tree:\n%s", d)
				}
			}
		})
	}
	t.Run("testimage tricky", func(t *testing.T) {
		layers := testimageLayers(t, testimage.TrickyLayers())
		exported := tarTree(t, exportBytes(t, layers))
		if d := diffMaps(exported, flattenTree(t, layers)); d != "" {
			t.Errorf("export differs from Flatten:\n%s", d)
		}
		for p, want := range testimage.TrickyResult {
			got, ok := exported[p]
			switch {
			case !ok:
				t.Errorf("missing %s", p)
			case want == "dir":
				if !strings.HasPrefix(got, "dir ") {
					t.Errorf("%s: got %s, want a directory", p, got)
				}
			case strings.HasPrefix(want, "->"):
				if !strings.Contains(got, `"`+want[2:]+`"`) {
					t.Errorf("%s: got %s, want symlink %s", p, got, want)
				}
			default:
				if !strings.Contains(got, `"`+strings.ReplaceAll(want, "\n", `\n`)+`"`) {
					t.Errorf("%s: got %s, want content %q", p, got, want)
				}
			}
		}
	})
}

// TestExportDevices checks that device nodes are exported from the headers (no root needed).
func TestExportDevices(t *testing.T) {
	layers := memLayers(tl{tDir("dev"), tartest.Char("dev/null", 1, 3), tartest.Block("dev/sda", 8, 0)})
	got := tarTree(t, exportBytes(t, layers))
	want := ownersOff(map[string]string{"dev": "dir 0755 0:0", "dev/null": `char 0666 0:0 "1:3"`,
		"dev/sda": `block 0660 0:0 "8:0"`})
	if d := diffMaps(got, want); d != "" {
		t.Error(d)
	}
}

// TestExportDeterministic exports the same image twice and with layers re-encoded, and
// checks the header fields Export fixes.
func TestExportDeterministic(t *testing.T) {
	layers := testimageLayers(t, testimage.TrickyLayers())
	a, b := exportBytes(t, layers), exportBytes(t, layers)
	if !bytes.Equal(a, b) {
		t.Fatalf("two exports differ: %x vs %x", sha256.Sum256(a), sha256.Sum256(b))
	}
	tr := tar.NewReader(bytes.NewReader(a))
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if h.Uname != "" || h.Gname != "" || !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() {
			t.Errorf("%s: uname %q gname %q atime %v ctime %v, want all cleared", h.Name, h.Uname, h.Gname, h.AccessTime, h.ChangeTime)
		}
		if strings.HasPrefix(h.Name, "/") || strings.HasPrefix(h.Name, "./") {
			t.Errorf("%s: name not relative", h.Name)
		}
		if h.Name == "caps" && h.PAXRecords["SCHILY.xattr.user.imgrun"] != "test" {
			t.Errorf("caps: xattr lost, PAX records %v", h.PAXRecords)
		}
		if h.Name == "usr/bin/su" && h.Mode != 0o4755 {
			t.Errorf("usr/bin/su: mode %o, want 4755", h.Mode)
		}
	}
	// The top layer's entries come first.
	if len(names) == 0 || names[0] != "tree" {
		t.Errorf("entries %q: want the top layer's tree first", names)
	}
}

// TestExportXattrs checks that xattrs are kept, overlay ones dropped.
func TestExportXattrs(t *testing.T) {
	layers := memLayers(tl{tFile("f", "x", tartest.Xattr("security.capability", "\x01\x00"),
		tartest.Xattr("trusted.overlay.opaque", "y"), tartest.Xattr("user.overlay.x", "y"),
		tartest.PAX("LIBARCHIVE.creationtime", "1"))})
	tr := tar.NewReader(bytes.NewReader(exportBytes(t, layers)))
	h, err := tr.Next()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"SCHILY.xattr.security.capability": "\x01\x00"}
	if len(h.PAXRecords) != len(want) || h.PAXRecords["SCHILY.xattr.security.capability"] != "\x01\x00" {
		t.Errorf("PAX records %q, want %q", h.PAXRecords, want)
	}
}

func TestExportErrors(t *testing.T) {
	tests := []struct {
		name   string
		layers []rootfs.Layer
		want   error
	}{
		{"dot-dot name", memLayers(tl{tFile("../x", "x")}), rootfs.ErrUnsafePath},
		{"dot-dot inside", memLayers(tl{tFile("a/../../x", "x")}), rootfs.ErrUnsafePath},
		{"link out", memLayers(tl{tFile("a", "a"), tLink("b", "../../etc/shadow")}), rootfs.ErrUnsafePath},
		{"invalid whiteout", memLayers(tl{tFile("a/.wh...", "")}), rootfs.ErrUnsafePath},
		{"root replaced", memLayers(tl{tSymlink("./", "/")}), rootfs.ErrUnsafePath},
		{"sparse", memLayers(tl{tartest.Raw(tar.TypeGNUSparse, "s")}), nil}, // archive/tar or Export refuses it
		{"unknown type", memLayers(tl{tartest.Raw('Z', "z")}), rootfs.ErrUnsupportedEntry},
		{"link to nothing", memLayers(tl{tLink("b", "missing")}), os.ErrNotExist},
		{"link to a directory", memLayers(tl{tDir("d")}, tl{tLink("b", "d")}), nil},
		{"diffID mismatch", []rootfs.Layer{memLayer(tartest.Tar(tFile("a", "a"))),
			badLayer{tartest.Tar(tFile("b", "b")), errDiffID}}, errDiffID},
		{"truncated", []rootfs.Layer{memLayer(tartest.Tar(tFile("a", strings.Repeat("a", 5000)))[:1024])}, io.ErrUnexpectedEOF},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := rootfs.Export(t.Context(), io.Discard, tc.layers)
			if err == nil {
				t.Fatal("Export succeeded")
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Errorf("Export: %v, want %v", err, tc.want)
			}
		})
	}
}

// TestExportCancelled checks that a cancelled context stops Export.
func TestExportCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	err := rootfs.Export(ctx, io.Discard, memLayers(tl{tFile("a", "a")}))
	if err == nil {
		t.Fatal("Export succeeded with a cancelled context")
	}
}

// TestExportCancelMidway cancels an Export blocked in the middle of a layer.
func TestExportCancelMidway(t *testing.T) {
	layers := []rootfs.Layer{memLayer(tartest.Tar(tDir("etc"))), blockLayer{stallPrefix(), make(chan struct{})}}
	ctx, cancel := context.WithCancel(t.Context())
	pr, pw := io.Pipe()
	errc := make(chan error, 1)
	go func() { errc <- rootfs.Export(ctx, pw, layers) }()
	// Read until the stalled layer's first file has been written (an eventual condition).
	tr := tar.NewReader(pr)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("reading the export: %v", err)
		}
		if h.Name == "partial/0" {
			break
		}
	}
	go io.Copy(io.Discard, pr)
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Export: %v, want context.Canceled", err)
	}
	pr.Close()
}
