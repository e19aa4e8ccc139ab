package layers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/imgrun/imgrun/internal/testreg"
)

// TestGC: after an image is removed, GC removes exactly the blobs no remaining image
// reaches (shared layers stay), plus partial downloads and tmp trees.
func TestGC(t *testing.T) {
	reg := testreg.New(t)
	base := testreg.Layer(t, testreg.File{Name: "base/", Body: ""}, testreg.File{Name: "base/f", Body: "shared"})
	keepImg := testreg.Image(t, "linux/amd64", base, testreg.Layer(t, testreg.File{Name: "keep", Body: "k"}))
	dropImg := testreg.Image(t, "linux/amd64", base, testreg.Layer(t, testreg.File{Name: "drop", Body: "d"}))
	arm := testreg.Image(t, "linux/arm64", testreg.Layer(t, testreg.File{Name: "arm", Body: "a"}))
	reg.PushIndex(t, "keep:1", testreg.Index(t, keepImg, arm))
	reg.Push(t, "drop:1", dropImg)

	s := newStore(t)
	kept, err := s.Pull(t.Context(), source(t, reg.Host, "keep:1"), PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	dropSrc := source(t, reg.Host, "drop:1")
	dropped, err := s.Pull(t.Context(), dropSrc, PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Remove(t.Context(), dropSrc.Reference(), nil); err != nil {
		t.Fatal(err)
	}
	// Leftovers of a killed pull and of a killed unpack.
	os.WriteFile(filepath.Join(s.ingest, "abc.partial"), []byte("junk"), 0o600)
	os.MkdirAll(filepath.Join(s.tmp, "tree", "etc"), 0o700)
	os.WriteFile(filepath.Join(s.tmp, "tree", "etc", "f"), []byte("junk"), 0o600)

	before := dirNames(t, s.blobs)
	rep, err := s.GC(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	want := []digest.Digest{dropped.Record.Descriptor.Digest, dropped.Manifest.Config.Digest, dropped.Manifest.Layers[1].Digest}
	if rep.Blobs != len(want) || rep.Kept != len(before)-len(want) || rep.BytesFreed <= 8 {
		t.Errorf("GC report %+v: want %d removed of %d", rep, len(want), len(before))
	}
	for _, d := range want {
		if s.Has(d) {
			t.Errorf("unreferenced blob %s kept", d)
		}
	}
	if !s.Has(kept.Record.Index) {
		t.Error("the index of a kept tag was collected")
	}
	if _, err := s.Load(t.Context(), kept.Record); err != nil {
		t.Errorf("kept image: %v", err)
	}
	if names := append(dirNames(t, s.ingest), dirNames(t, s.tmp)...); len(names) != 0 {
		t.Errorf("GC left %v", names)
	}
	rep, err = s.GC(t.Context())
	if err != nil || rep.Blobs != 0 {
		t.Errorf("second GC = %+v, %v", rep, err)
	}
}

// TestGCWaitsForHolders: GC does not run while a pull (or anyone holding the store)
// is in progress.
func TestGCWaitsForHolders(t *testing.T) {
	s := newStore(t)
	release, err := s.Hold(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
	defer cancel()
	if _, err := s.GC(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GC while held = %v, want it to wait", err)
	}
	release()
	if _, err := s.GC(t.Context()); err != nil {
		t.Fatal(err)
	}
}

// TestVerify: a layer whose bytes were changed on disk is found, removed, reported
// missing for its image, and fetched again by the next pull (only that blob).
func TestVerify(t *testing.T) {
	reg := testreg.New(t)
	img := testImage(t, "linux/amd64", 80, 50<<10)
	reg.Push(t, "app:1", img)
	s := newStore(t)
	pulled, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	victim := pulled.Manifest.Layers[1]
	p := filepath.Join(s.blobs, victim.Digest.Encoded())
	b, _ := os.ReadFile(p)
	b[len(b)/2] ^= 0x01
	os.WriteFile(p, b, 0o600)
	// A symlink planted in blobs/ is not a blob either.
	link := digest.FromString("planted")
	os.Symlink("/etc/passwd", filepath.Join(s.blobs, link.Encoded()))

	rep, err := s.Verify(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(rep.Corrupt, sortedDigests(victim.Digest, link)) {
		t.Errorf("Corrupt = %v, want %v and %v", rep.Corrupt, victim.Digest, link)
	}
	if len(rep.Missing) != 1 || rep.Missing[0].Digest != victim.Digest {
		t.Errorf("Missing = %+v", rep.Missing)
	}
	if s.Has(victim.Digest) {
		t.Error("corrupt blob still present")
	}
	if _, err := s.Load(t.Context(), pulled.Record); !errors.Is(err, ErrNotCached) {
		t.Errorf("Load = %v, want ErrNotCached", err)
	}
	reg.Counter.Reset()
	if _, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64}); err != nil {
		t.Fatal(err)
	}
	if n := blobGets(reg, ""); n != 1 || blobGets(reg, victim.Digest.Encoded()) != 1 {
		t.Errorf("re-pull fetched %d blobs, want only the removed one", n)
	}
	if rep, err := s.Verify(t.Context()); err != nil || len(rep.Corrupt)+len(rep.Missing) != 0 {
		t.Errorf("Verify after re-pull = %+v, %v", rep, err)
	}
}

func sortedDigests(ds ...digest.Digest) []digest.Digest {
	slices.Sort(ds)
	return ds
}

// TestGCDuringPulls: GC running over and over while images are pulled never collects a
// blob a finished pull needs.
func TestGCDuringPulls(t *testing.T) {
	reg := testreg.New(t)
	const n = 4
	for i := range n {
		reg.Push(t, fmt.Sprint("app:", i), testImage(t, "linux/amd64", uint64(200+i), 200<<10))
	}
	root := newStore(t).Root()
	var runs atomic.Int64
	ctx, stop := context.WithCancel(t.Context())
	gcDone := make(chan struct{})
	go func() {
		defer close(gcDone)
		s, _ := Open(root)
		for ctx.Err() == nil {
			if _, err := s.GC(ctx); err == nil {
				runs.Add(1)
			}
		}
	}()
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, _ := Open(root)
			if _, err := s.Pull(t.Context(), source(t, reg.Host, fmt.Sprint("app:", i)), PullOptions{Platform: amd64}); err != nil {
				t.Error(err)
			}
		})
		time.Sleep(20 * time.Millisecond) // stagger, so GC runs between and during pulls
	}
	wg.Wait()
	during := runs.Load()
	// At least one full GC after every pull ended, racing nothing.
	for runs.Load() == during {
		time.Sleep(time.Millisecond)
	}
	stop()
	<-gcDone
	t.Logf("%d GC runs while pulling", during)
	s, _ := Open(root)
	rep, err := s.Verify(t.Context())
	if err != nil || len(rep.Corrupt)+len(rep.Missing) != 0 || rep.Checked != 3*n+1 { // manifest, config, own layer; one shared base layer
		t.Errorf("after GC: Verify = %+v, %v; want %d intact blobs", rep, err, 3*n+1)
	}
}
