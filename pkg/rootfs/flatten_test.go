package rootfs_test

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// TestFlattenRules flattens the conformance corpus and compares with the hand-written trees.
func TestFlattenRules(t *testing.T) {
	for _, tc := range trickyImages {
		if tc.want == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			if os.Geteuid() != 0 && strings.Contains(tc.name, "owners") {
				t.Skip("owners need root")
			}
			got := flattenTree(t, memLayers(tc.layers...))
			if d := diffMaps(got, ownersOff(tc.want)); d != "" {
				t.Errorf("Flatten:\n%s", d)
			}
		})
	}
}

// TestFlattenTarget checks what Flatten accepts as its target directory.
func TestFlattenTarget(t *testing.T) {
	layers := memLayers(tl{tFile("a", "a")})
	tests := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error
	}{
		{"absent", func(*testing.T, string) {}, nil},
		{"empty directory", func(t *testing.T, dir string) { mustMkdir(t, dir) }, nil},
		{"non-empty directory", func(t *testing.T, dir string) {
			mustMkdir(t, dir)
			mustWrite(t, filepath.Join(dir, "keep"), "mine")
		}, rootfs.ErrNotEmpty},
		{"a file", func(t *testing.T, dir string) { mustWrite(t, dir, "file") }, rootfs.ErrNotEmpty},
		{"a symlink to an empty directory", func(t *testing.T, dir string) {
			mustMkdir(t, dir+"-real")
			if err := os.Symlink(dir+"-real", dir); err != nil {
				t.Fatal(err)
			}
		}, rootfs.ErrNotEmpty},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "target")
			tc.setup(t, dir)
			before := snapshot(t, filepath.Dir(dir))
			err := rootfs.Flatten(t.Context(), dir, layers)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Flatten: %v, want %v", err, tc.want)
			}
			if tc.want != nil {
				if after := snapshot(t, filepath.Dir(dir)); after != before {
					t.Errorf("a failed Flatten changed the parent:\nbefore %s\nafter  %s", before, after)
				}
				return
			}
			if d := diffMaps(diskTree(t, dir), ownersOff(map[string]string{"a": `file 0644 0:0 "a"`})); d != "" {
				t.Error(d)
			}
			fi, err := os.Stat(dir)
			if err != nil || fi.Mode().Perm() != 0o755 {
				t.Errorf("root of the tree: %v %v, want mode 0755", fi.Mode(), err)
			}
		})
	}
}

// TestFlattenFailureLeavesNothing checks that a failed Flatten leaves dir absent (or empty)
// and no temporary tree beside it.
func TestFlattenFailureLeavesNothing(t *testing.T) {
	good := memLayer(tartest.Tar(tDir("etc"), tFile("etc/passwd", "root:x:0:0::/root:/bin/sh\n"),
		tDir("ro", tMode(0o555)), tFile("ro/f", "f", tMode(0o444))))
	big := tartest.Tar(tFile("big", strings.Repeat("x", 1<<20)))
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name   string
		ctx    context.Context
		layers []rootfs.Layer
		want   error
	}{
		{"corrupt tar", nil, []rootfs.Layer{good, memLayer("this is not a tar archive, not at all; " + strings.Repeat("?", 600))}, nil},
		{"truncated layer", nil, []rootfs.Layer{good, memLayer(big[:len(big)/2])}, io.ErrUnexpectedEOF},
		{"diffID mismatch at EOF", nil, []rootfs.Layer{good, badLayer{big, errDiffID}}, errDiffID},
		{"diffID mismatch after the tar's end", nil, []rootfs.Layer{badLayer{tartest.Tar(tFile("a", "a")), errDiffID}}, errDiffID},
		{"open error", nil, []rootfs.Layer{good, openErrLayer{errDiffID}}, errDiffID},
		{"unsafe name", nil, []rootfs.Layer{good, memLayer(tartest.Tar(tFile("../escape", "x")))}, rootfs.ErrUnsafePath},
		{"cancelled", cancelled, []rootfs.Layer{good}, context.Canceled},
	}
	for _, tc := range tests {
		for _, existing := range []bool{false, true} {
			name := tc.name + "/absent"
			if existing {
				name = tc.name + "/empty"
			}
			t.Run(name, func(t *testing.T) {
				parent := t.TempDir()
				dir := filepath.Join(parent, "rootfs")
				if existing {
					mustMkdir(t, dir)
				}
				ctx := tc.ctx
				if ctx == nil {
					ctx = t.Context()
				}
				err := rootfs.Flatten(ctx, dir, tc.layers)
				if err == nil {
					t.Fatal("Flatten succeeded")
				}
				if tc.want != nil && !errors.Is(err, tc.want) {
					t.Errorf("Flatten: %v, want %v", err, tc.want)
				}
				ents, _ := os.ReadDir(parent)
				var names []string
				for _, e := range ents {
					names = append(names, e.Name())
				}
				want := ""
				if existing {
					want = "rootfs"
					if inner, _ := os.ReadDir(dir); len(inner) > 0 {
						t.Errorf("target not empty after failure: %v", inner)
					}
				}
				if got := strings.Join(names, " "); got != want {
					t.Errorf("parent holds %q after failure, want %q", got, want)
				}
			})
		}
	}
}

type openErrLayer struct{ err error }

func (o openErrLayer) Uncompressed(context.Context) (io.ReadCloser, error) { return nil, o.err }

// TestFlattenManyLayers flattens more layers than the pipeline decodes ahead, each adding
// and deleting, to check that they are applied strictly in order.
func TestFlattenManyLayers(t *testing.T) {
	var ls []tl
	want := map[string]string{}
	for i := range 12 {
		n := string(rune('a' + i))
		l := tl{tFile("f", n), tFile("only-"+n, strings.Repeat(n, 300<<10))}
		if i > 0 {
			l = append(l, tWh("only-"+string(rune('a'+i-1))))
		}
		ls = append(ls, l)
	}
	want["f"] = `file 0644 0:0 "l"`
	want["only-l"] = `file 0644 0:0 "` + strings.Repeat("l", 300<<10) + `"`
	layers := memLayers(ls...)
	if d := diffMaps(flattenTree(t, layers), ownersOff(want)); d != "" {
		t.Errorf("Flatten:\n%.2000s", d)
	}
	if d := diffMaps(tarTree(t, exportBytes(t, layers)), ownersOff(want)); d != "" {
		t.Errorf("Export:\n%.2000s", d)
	}
}

func mustMkdir(t *testing.T, dir string) {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
}

func mustWrite(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// snapshot lists a directory's entries and their modes.
func snapshot(t *testing.T, dir string) string {
	t.Helper()
	var b strings.Builder
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b.WriteString(e.Name() + ":" + e.Type().String() + " ")
	}
	return b.String()
}

// TestFlattenCancelMidway cancels a Flatten blocked in the middle of a layer: it returns the
// context's error and leaves nothing behind.
func TestFlattenCancelMidway(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "rootfs")
	layers := []rootfs.Layer{memLayer(tartest.Tar(tDir("etc"))), blockLayer{stallPrefix(), make(chan struct{})}}
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() { errc <- rootfs.Flatten(ctx, dir, layers) }()
	// Wait until the stalled layer's first files are on disk (an eventual condition).
	for {
		m, _ := filepath.Glob(filepath.Join(parent, ".rootfs.imgrun-tmp-*", "partial", "0"))
		m1, _ := filepath.Glob(filepath.Join(parent, ".rootfs.imgrun-tmp-*", "1", "partial", "0")) // layers applied concurrently
		if len(m)+len(m1) > 0 {
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("Flatten returned before it was cancelled: %v", err)
		case <-time.After(5 * time.Millisecond):
		}
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("Flatten: %v, want context.Canceled", err)
	}
	if names := dirNames(t, parent); len(names) > 0 {
		t.Errorf("parent holds %v after a cancelled Flatten", names)
	}
}

// TestFlattenRemovesStaleTemps checks that Flatten removes what a killed Flatten into the
// same target left beside it, but not the temporary tree of one still running.
func TestFlattenRemovesStaleTemps(t *testing.T) {
	parent := t.TempDir()
	stale := filepath.Join(parent, ".rootfs.imgrun-tmp-111")
	live := filepath.Join(parent, ".rootfs.imgrun-tmp-222")
	for _, d := range []string{stale, live} {
		mustMkdir(t, d)
		mustMkdir(t, filepath.Join(d, "ro"))
		mustWrite(t, filepath.Join(d, "ro", "f"), "partial")
		if err := os.Chmod(filepath.Join(d, "ro"), 0o555); err != nil {
			t.Fatal(err)
		}
	}
	// A running Flatten holds an flock on its temporary tree.
	fd, err := unix.Open(live, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	if err := unix.Flock(fd, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	if err := rootfs.Flatten(t.Context(), filepath.Join(parent, "rootfs"), memLayers(tl{tFile("a", "a")})); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(stale); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stale temporary tree still there: %v", err)
	}
	if _, err := os.Stat(live); err != nil {
		t.Errorf("live temporary tree removed: %v", err)
	}
	os.Chmod(filepath.Join(live, "ro"), 0o755) // let t.TempDir clean up rootless
}
