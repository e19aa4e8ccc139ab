package rootfs_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/imgrun/imgrun/internal/tartest"
	"github.com/imgrun/imgrun/pkg/rootfs"
)

// pendingLayers are three layers whose later ones delete and replace what earlier ones made,
// so that applying them out of order would give a different tree.
func pendingLayers() []rootfs.Layer {
	return memLayers(
		[]tartest.Entry{tartest.Dir("etc"), tartest.File("etc/a", "1"), tartest.File("etc/b", "1"), tartest.Dir("opt")},
		[]tartest.Entry{tartest.Dir("etc"), tartest.Whiteout("etc/a"), tartest.File("etc/b", "2"), tartest.Opaque("opt"), tartest.File("opt/x", "2")},
		[]tartest.Entry{tartest.Dir("etc"), tartest.File("etc/a", "3"), tartest.Whiteout("opt")},
	)
}

// TestFlattenPending: layers handed over in any order, while Flatten already runs, give the
// same tree as the layers given up front.
func TestFlattenPending(t *testing.T) {
	want := flattenTree(t, pendingLayers())
	for _, tc := range []struct {
		name  string
		order []int
	}{
		{"in order", []int{0, 1, 2}},
		{"reverse", []int{2, 1, 0}},
		{"middle first", []int{1, 2, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := pendingLayers()
			p := rootfs.NewPending(len(ls))
			dir := filepath.Join(t.TempDir(), "rootfs")
			done := make(chan error, 1)
			go func() { done <- rootfs.Flatten(t.Context(), dir, p.Layers()) }()
			for _, i := range tc.order {
				time.Sleep(5 * time.Millisecond) // let Flatten wait for it
				p.Ready(i, ls[i])
			}
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			if d := diffMaps(diskTree(t, dir), want); d != "" {
				t.Errorf("tree differs:\n%s", d)
			}
		})
	}
}

// TestFlattenPendingFail: a download that fails after the first layer stops the build with its
// error and publishes nothing; a cancelled context does too.
func TestFlattenPendingFail(t *testing.T) {
	errPull := errors.New("pull failed (simulated)")
	for _, tc := range []struct {
		name   string
		stop   func(p *rootfs.Pending, cancel context.CancelFunc)
		wantIs error
	}{
		{"fail", func(p *rootfs.Pending, _ context.CancelFunc) { p.Fail(errPull) }, errPull},
		{"fail without cause", func(p *rootfs.Pending, _ context.CancelFunc) { p.Fail(nil) }, rootfs.ErrPullFailed},
		{"cancel", func(_ *rootfs.Pending, cancel context.CancelFunc) { cancel() }, context.Canceled},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ls := pendingLayers()
			p := rootfs.NewPending(len(ls))
			ctx, cancel := context.WithCancel(t.Context())
			defer cancel()
			dir := filepath.Join(t.TempDir(), "rootfs")
			done := make(chan error, 1)
			go func() { done <- rootfs.Flatten(ctx, dir, p.Layers()) }()
			p.Ready(0, ls[0])
			p.Ready(2, ls[2])
			tc.stop(p, cancel)
			err := <-done
			if !errors.Is(err, tc.wantIs) {
				t.Fatalf("Flatten: %v, want %v", err, tc.wantIs)
			}
			if _, err := os.Lstat(dir); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after a failed build (%v)", dir, err)
			}
			ents, _ := os.ReadDir(filepath.Dir(dir))
			if len(ents) != 0 {
				t.Errorf("leftovers beside the target: %v", ents)
			}
		})
	}
}

// TestPendingReadyTwice: a second Ready for one index, or one out of range, changes nothing,
// and a layer ready before a failure is still served.
func TestPendingReadyTwice(t *testing.T) {
	ls := pendingLayers()
	p := rootfs.NewPending(1)
	p.Ready(0, ls[0])
	p.Ready(0, ls[1])
	p.Ready(5, ls[2])
	p.Ready(-1, ls[2])
	p.Fail(errors.New("late failure"))
	if d := diffMaps(flattenTree(t, p.Layers()), flattenTree(t, ls[:1])); d != "" {
		t.Errorf("tree differs from layer 0 alone:\n%s", d)
	}
}
