package rootfs_test

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/imgrun/imgrun/pkg/rootfs"
)

// TestFlattenParallelMatchesInOrder flattens random images both ways, layers applied
// concurrently and merged (the default as root) and one after the other, and compares the
// trees. Images that need their lower layers take the second way in both.
func TestFlattenParallelMatchesInOrder(t *testing.T) {
	needRoot(t)
	n := 200
	if testing.Short() {
		n = 40
	}
	merged := 0
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 11))
		ls := randomImage(r)
		layers := memLayers(ls...)
		par := t.TempDir() + "/par"
		perr := rootfs.Flatten(t.Context(), par, layers)
		restore := rootfs.SetParallelFlatten(false)
		seq := t.TempDir() + "/seq"
		serr := rootfs.Flatten(t.Context(), seq, layers)
		restore()
		if (perr == nil) != (serr == nil) {
			t.Fatalf("seed %d: parallel: %v, in order: %v", seed, perr, serr)
		}
		if perr != nil {
			continue
		}
		if _, fb := snapshotTree(t, layers); fb == nil {
			merged++
		}
		if d := diffMaps(diskTree(t, par), diskTree(t, seq)); d != "" {
			t.Fatalf("seed %d: parallel Flatten differs from in-order Flatten:\n%s\nimage:\n%s", seed, d, describeLayers(ls))
		}
	}
	t.Logf("%d of %d images were merged from layers applied concurrently", merged, n)
	if merged == 0 {
		t.Error("no image took the concurrent path")
	}
}

// TestFlattenLayersInOrder: WithLayersInOrder skips the concurrent apply and the merge; the
// tree is the same.
func TestFlattenLayersInOrder(t *testing.T) {
	needRoot(t)
	layers := memLayers(tl{tDir("etc"), tFile("etc/a", "a")}, tl{tWh("etc/a"), tFile("etc/b", "b")})
	for _, inOrder := range []bool{false, true} {
		var logs bytes.Buffer
		opts := []rootfs.ApplyOption{rootfs.WithLogger(slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})))}
		if inOrder {
			opts = append(opts, rootfs.WithLayersInOrder())
		}
		dir := t.TempDir() + "/rootfs"
		if err := rootfs.Flatten(t.Context(), dir, layers, opts...); err != nil {
			t.Fatal(err)
		}
		if merged := strings.Contains(logs.String(), "layers merged"); merged == inOrder {
			t.Errorf("WithLayersInOrder %v: merged %v\n%s", inOrder, merged, logs.String())
		}
		if d := diffMaps(diskTree(t, dir), flattenTree(t, layers)); d != "" {
			t.Errorf("WithLayersInOrder %v:\n%s", inOrder, d)
		}
	}
}
