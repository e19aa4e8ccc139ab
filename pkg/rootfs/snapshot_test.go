package rootfs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/pkg/rootfs"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("overlay snapshots need root")
	}
}

// layerDiffIDs returns the diffIDs of in-memory layers.
func layerDiffIDs(t testing.TB, layers []rootfs.Layer) []digest.Digest {
	t.Helper()
	ids := make([]digest.Digest, len(layers))
	for i, l := range layers {
		rc, err := l.Uncompressed(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = digest.FromBytes(b)
	}
	return ids
}

// composeTree mounts a stack of snapshots (top first) read-only with overlayfs, as pkg/run
// does, and describes the tree it shows.
func composeTree(t testing.TB, stack []string) map[string]string {
	t.Helper()
	lowers := stack
	if len(lowers) == 1 {
		empty, err := os.MkdirTemp("", "empty-")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(empty)
		lowers = append(lowers, empty) // a lowerdir-only overlay needs two layers
	}
	mnt, err := os.MkdirTemp("", "compose-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(mnt)
	if err := unix.Mount("overlay", mnt, "overlay", unix.MS_RDONLY, "lowerdir="+strings.Join(lowers, ":")); err != nil {
		t.Fatalf("mount overlay of %d snapshots: %v", len(stack), err)
	}
	defer unix.Unmount(mnt, unix.MNT_DETACH)
	return diskTree(t, mnt)
}

// snapshotTree builds the snapshots of layers in a fresh cache and describes their composed
// tree; fallback reports ErrNeedsLowers (the caller flattens such images).
func snapshotTree(t testing.TB, layers []rootfs.Layer) (tree map[string]string, fallback error) {
	t.Helper()
	// Not t.TempDir: test names put commas in it, which overlayfs' options cannot hold.
	tmp, err := os.MkdirTemp("", "snapshots-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(tmp) })
	c, err := rootfs.OpenCache(filepath.Join(tmp, "root"))
	if err != nil {
		t.Fatal(err)
	}
	stack, release, err := c.Snapshots(t.Context(), layerDiffIDs(t, layers), layers)
	if errors.Is(err, rootfs.ErrNeedsLowers) {
		return nil, err
	}
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if len(stack) != len(layers) {
		t.Fatalf("stack of %d for %d layers", len(stack), len(layers))
	}
	return composeTree(t, stack), nil
}

// TestSnapshotsRules composes the conformance corpus from snapshots and compares with Flatten.
func TestSnapshotsRules(t *testing.T) {
	needRoot(t)
	var fellBack []string
	for _, tc := range trickyImages {
		if tc.want == nil {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			layers := memLayers(tc.layers...)
			got, fb := snapshotTree(t, layers)
			if fb != nil {
				fellBack = append(fellBack, tc.name)
				t.Logf("falls back to a flat tree: %v", fb)
				return
			}
			if d := diffMaps(got, ownersOff(tc.want)); d != "" {
				t.Errorf("snapshots composed by overlayfs differ from the expected tree:\n%s", d)
			}
		})
	}
	t.Logf("%d cases fell back: %v", len(fellBack), fellBack)
}

// TestSnapshotsRandom composes random images from snapshots and compares with Flatten. A few
// images may need their lowers (writes through symlinks, links to lower files): those must
// fall back, and must be few.
func TestSnapshotsRandom(t *testing.T) {
	needRoot(t)
	n := 300
	if testing.Short() {
		n = 50
	}
	fellBack := 0
	reasons := map[string]int{}
	for seed := range n {
		r := rand.New(rand.NewPCG(uint64(seed), 7))
		ls := randomImage(r)
		layers := memLayers(ls...)
		dir := t.TempDir() + "/rootfs"
		ferr := rootfs.Flatten(t.Context(), dir, layers)
		var got map[string]string
		var fb error
		t.Run(fmt.Sprint(seed), func(t *testing.T) { got, fb = snapshotTree(t, layers) })
		if t.Failed() {
			t.FailNow()
		}
		if fb != nil {
			fellBack++
			msg := fb.Error()
			reasons[msg[strings.LastIndex(msg, ": ")+2:]]++
			continue
		}
		var d string
		if ferr != nil {
			d = fmt.Sprintf("Flatten: %v, snapshots succeeded", ferr)
		} else {
			d = diffMaps(got, diskTree(t, dir))
		}
		if d != "" {
			t.Fatalf("seed %d: snapshots differ from Flatten:\n%s\nimage:\n%s", seed, d, describeLayers(ls))
		}
	}
	t.Logf("%d of %d random images fell back to a flat tree: %v", fellBack, n, reasons)
}

// TestSnapshotsShared: a second image that shares its first three layers with a cached one
// reads only its own layer, and composes to its flattened tree.
func TestSnapshotsShared(t *testing.T) {
	needRoot(t)
	base := []tl{
		{tDir("etc"), tFile("etc/os-release", "ID=test\n"), tFile("etc/motd", "hi"), tDir("usr/lib", tMode(0o750))},
		{tFile("usr/lib/libx.so", "x"), tFile("etc/gone", "bye")},
		{tWh("etc/gone"), tFile("usr/bin/app", "app", tMode(0o755))},
	}
	img1 := memLayers(append(base[:3:3], tl{tFile("etc/one", "1")})...)
	img2 := memLayers(append(base[:3:3], tl{tWh("etc/motd"), tFile("usr/lib/liby.so", "y"), tOpaque("usr/bin")})...)
	c, _ := openCache(t)
	stack1, release1, err := c.Snapshots(t.Context(), layerDiffIDs(t, img1), img1)
	if err != nil {
		t.Fatal(err)
	}
	defer release1()
	var opened atomic.Int64
	counted := make([]rootfs.Layer, len(img2))
	for i, l := range img2 {
		counted[i] = countLayer{Layer: l, n: &opened}
	}
	ids2 := layerDiffIDs(t, img2)
	stack2, release2, err := c.Snapshots(t.Context(), ids2, counted)
	if err != nil {
		t.Fatal(err)
	}
	defer release2()
	if n := opened.Load(); n != 1 {
		t.Errorf("second image opened %d layers, want 1 (only its own)", n)
	}
	if stack1[1] != stack2[1] || stack1[3] != stack2[3] || stack1[0] == stack2[0] {
		t.Errorf("stacks do not share the base:\n%v\n%v", stack1, stack2)
	}
	if d := diffMaps(composeTree(t, stack2), flattenTree(t, img2)); d != "" {
		t.Errorf("second image:\n%s", d)
	}
	if d := diffMaps(composeTree(t, stack1), flattenTree(t, img1)); d != "" {
		t.Errorf("first image:\n%s", d)
	}
}

// TestSnapshotsFallbackRemembered: a layer that writes through a lower symlink needs its
// lowers; the chain is remembered, so the next call fails at once without reading a layer.
func TestSnapshotsFallbackRemembered(t *testing.T) {
	needRoot(t)
	img := memLayers(
		tl{tDir("usr/lib"), tSymlink("lib", "usr/lib")},
		tl{tFile("lib/libz.so", "z")},
	)
	c, root := openCache(t)
	ids := layerDiffIDs(t, img)
	if _, _, err := c.Snapshots(t.Context(), ids, img); !errors.Is(err, rootfs.ErrNeedsLowers) {
		t.Fatalf("Snapshots = %v, want ErrNeedsLowers", err)
	}
	var opened atomic.Int64
	counted := []rootfs.Layer{countLayer{img[0], &opened}, countLayer{img[1], &opened}}
	if _, _, err := c.Snapshots(t.Context(), ids, counted); !errors.Is(err, rootfs.ErrNeedsLowers) {
		t.Fatalf("second Snapshots = %v, want ErrNeedsLowers", err)
	}
	if n := opened.Load(); n != 0 {
		t.Errorf("second call opened %d layers, want 0", n)
	}
	if ents, _ := os.ReadDir(filepath.Join(root, "tmp")); len(ents) != 0 {
		t.Errorf("tmp/ not empty after a fallback: %v", ents)
	}
}

// TestSnapshotsFailure: a layer that fails (truncated tar) leaves nothing under snapshots/.
func TestSnapshotsFailure(t *testing.T) {
	needRoot(t)
	good := memLayers(tl{tFile("a", "a")}, tl{tFile("b", "b")})
	bad := []rootfs.Layer{good[0], badLayer{good[1].(memLayer)[:700], io.ErrUnexpectedEOF}}
	c, root := openCache(t)
	_, _, err := c.Snapshots(t.Context(), layerDiffIDs(t, good), bad)
	if err == nil {
		t.Fatal("Snapshots of a failing layer succeeded")
	}
	for _, d := range []string{"snapshots", "tmp"} {
		if ents, _ := os.ReadDir(filepath.Join(root, d)); len(ents) != 0 {
			t.Errorf("%s/ not empty after a failure: %v", d, ents)
		}
	}
	if n, err := c.PruneSnapshots(t.Context(), func(digest.Digest) bool { return false }); err != nil || n != 0 {
		t.Errorf("PruneSnapshots = %d, %v", n, err)
	}
}

// TestSnapshotsWhileHeld: a second user of an image whose snapshots another one is building
// waits for the build, not for the other to be done using them.
func TestSnapshotsWhileHeld(t *testing.T) {
	needRoot(t)
	layers := memLayers(tl{tFile("a", "a")}, tl{tFile("b", "b")})
	ids := layerDiffIDs(t, layers)
	c1, root := openCache(t)
	c2, err := rootfs.OpenCache(root)
	if err != nil {
		t.Fatal(err)
	}
	unblock, building := make(chan struct{}), make(chan struct{})
	slow := []rootfs.Layer{layers[0], gatedLayer{layers[1], unblock, building}}
	held := make(chan func(), 1)
	go func() {
		_, release, err := c1.Snapshots(t.Context(), ids, slow)
		if err != nil {
			t.Error(err)
			release = func() {}
		}
		held <- release // kept until the end of the test
	}()
	<-building // the first user holds the build locks
	second := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
		defer cancel()
		_, release, err := c2.Snapshots(ctx, ids, layers)
		if err == nil {
			release()
		}
		second <- err
	}()
	select {
	case err := <-second:
		t.Fatalf("second user returned while the first was still building: %v", err)
	case <-time.After(200 * time.Millisecond):
	}
	close(unblock)
	release := <-held
	defer release()
	if err := <-second; err != nil {
		t.Fatalf("second user, first one holding the snapshots: %v", err)
	}
}

// gatedLayer is a layer whose stream starts once gate is closed; it closes opened when
// asked for it.
type gatedLayer struct {
	rootfs.Layer
	gate, opened chan struct{}
}

func (g gatedLayer) Uncompressed(ctx context.Context) (io.ReadCloser, error) {
	close(g.opened)
	select {
	case <-g.gate:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return g.Layer.Uncompressed(ctx)
}
