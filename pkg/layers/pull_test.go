package layers

import (
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/imgrun/imgrun/internal/testreg"
	"github.com/imgrun/imgrun/pkg/registry"
)

// TestPullTwice: a second pull of a cached tag costs one manifest HEAD and no GET; a
// cached digest reference costs no manifest or blob request at all.
func TestPullTwice(t *testing.T) {
	reg := testreg.New(t)
	amd := testImage(t, "linux/amd64", 10, 200<<10, 50<<10)
	arm := testImage(t, "linux/arm64/v8", 20, 100<<10)
	idx := testreg.WithAttestation(t, testreg.Index(t, amd, arm), amd)
	idxDigest := reg.PushIndex(t, "app:1", idx)
	s := newStore(t)

	var mu sync.Mutex
	ready := map[int]digest.Digest{}
	resolved, readyBeforeResolved := 0, false
	img, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64, Jobs: 2,
		Resolved: func(img *Image) {
			mu.Lock()
			resolved++
			readyBeforeResolved = len(ready) > 0
			mu.Unlock()
			if n := len(img.Layers()); n != 3 {
				t.Errorf("Resolved: %d layers, want 3", n)
			}
		},
		LayerReady: func(i int, l Layer) {
			mu.Lock()
			ready[i] = l.Descriptor.Digest
			mu.Unlock()
		}})
	if err != nil {
		t.Fatal(err)
	}
	if resolved != 1 || readyBeforeResolved {
		t.Errorf("Resolved called %d times (want 1), after a LayerReady: %v", resolved, readyBeforeResolved)
	}
	for i, l := range img.Layers() {
		if ready[i] != l.Descriptor.Digest {
			t.Errorf("LayerReady(%d) = %s, want %s", i, ready[i], l.Descriptor.Digest)
		}
	}
	amdDigest, _ := amd.Digest()
	if img.Record.Descriptor.Digest.String() != amdDigest.String() || img.Record.Index.String() != idxDigest.String() {
		t.Errorf("record %+v: want manifest %s, index %s", img.Record, amdDigest, idxDigest)
	}
	if len(img.Layers()) != 3 {
		t.Fatalf("%d layers, want 3", len(img.Layers()))
	}
	if n := blobGets(reg, ""); n != 3+1 { // layers and config
		t.Errorf("first pull: %d blob GETs, want 4", n)
	}
	for _, l := range img.Layers() {
		rc, err := l.Uncompressed(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := readTar(rc); err != nil {
			t.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			t.Errorf("layer %s: %v", l.Descriptor.Digest, err)
		}
	}

	reg.Counter.Reset()
	img2, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	if img2.Record.Descriptor.Digest != img.Record.Descriptor.Digest {
		t.Error("second pull resolved another manifest")
	}
	heads, gets := reg.Counter.Count(http.MethodHead, testreg.KindManifest), reg.Counter.Count(http.MethodGet, testreg.KindManifest)
	if heads != 1 || gets != 0 || reg.Counter.Count("", testreg.KindBlob) != 0 {
		t.Errorf("second pull: %d manifest HEADs, %d manifest GETs, %d blob requests; want 1, 0, 0: %+v",
			heads, gets, reg.Counter.Count("", testreg.KindBlob), reg.Counter.Requests())
	}

	reg.Counter.Reset()
	if _, err := s.Pull(t.Context(), source(t, reg.Host, "app@"+amdDigest.String()), PullOptions{Platform: amd64}); err != nil {
		t.Fatal(err)
	}
	if n := reg.Counter.Count("", testreg.KindManifest) + reg.Counter.Count("", testreg.KindBlob); n != 0 {
		t.Errorf("cached digest pull sent %d manifest/blob requests: %+v", n, reg.Counter.Requests())
	}

	// index.json: one entry per (ref, platform), parseable by anyone.
	recs, err := s.Images(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 {
		t.Fatalf("index.json has %d records, want 2 (tag and digest ref): %+v", len(recs), recs)
	}
	if recs[0].Ref != reg.Host+"/app:1" || recs[0].Platform.Architecture != "amd64" {
		t.Errorf("record %+v", recs[0])
	}
}

func TestPullLookupLoadRemove(t *testing.T) {
	reg := testreg.New(t)
	reg.Push(t, "app:1", testImage(t, "linux/amd64", 30, 10<<10))
	s := newStore(t)
	src := source(t, reg.Host, "app:1")
	img, err := s.Pull(t.Context(), src, PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	ref := src.Reference()
	rec, err := s.Lookup(t.Context(), ref, amd64)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Descriptor.Digest != img.Record.Descriptor.Digest || rec.Index != "" {
		t.Errorf("Lookup = %+v", rec)
	}
	if rec.Pinned() != reg.Host+"/app@"+rec.Descriptor.Digest.String() {
		t.Errorf("Pinned = %s", rec.Pinned())
	}
	loaded, err := s.Load(t.Context(), rec)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(loaded.Config.RootFS.DiffIDs, img.Config.RootFS.DiffIDs) || len(loaded.Layers()) != 2 {
		t.Error("Load differs from Pull")
	}
	if _, err := s.Lookup(t.Context(), ref, ocispec.Platform{OS: "linux", Architecture: "x86_64"}); err != nil {
		t.Errorf("Lookup(x86_64) = %v: platforms must compare normalized", err)
	}
	arm := ocispec.Platform{OS: "linux", Architecture: "arm64"}
	if _, err := s.Lookup(t.Context(), ref, arm); !errors.Is(err, ErrNotCached) {
		t.Errorf("Lookup(other platform) = %v, want ErrNotCached", err)
	}
	if err := s.Remove(t.Context(), ref, &arm); !errors.Is(err, ErrNotCached) {
		t.Errorf("Remove(other platform) = %v, want ErrNotCached", err)
	}
	if err := s.Remove(t.Context(), ref, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lookup(t.Context(), ref, amd64); !errors.Is(err, ErrNotCached) {
		t.Errorf("Lookup after Remove = %v, want ErrNotCached", err)
	}
	// A missing layer makes Load fail with ErrNotCached.
	os.Remove(filepath.Join(s.blobs, img.Manifest.Layers[1].Digest.Encoded()))
	if _, err := s.Load(t.Context(), rec); !errors.Is(err, ErrNotCached) {
		t.Errorf("Load with a missing layer = %v, want ErrNotCached", err)
	}
}

// TestPullFaults runs pulls through the fault-injecting proxy.
func TestPullFaults(t *testing.T) {
	img := testImage(t, "linux/amd64", 40, 600<<10)
	big, size := largestLayer(t, img)
	tests := []struct {
		name    string
		fault   testreg.Fault
		wantErr error
		ranged  bool // a Range request must have been sent (resume)
	}{
		{name: "corrupt byte", fault: testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Action: testreg.FlipByte(int(size / 2))}, wantErr: ErrDigestMismatch},
		{name: "500 then ok", fault: testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Times: 1, Action: testreg.Status(500)}},
		{name: "truncated once", fault: testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Times: 1, Action: testreg.Truncate(int(size / 3))}, ranged: true},
		{name: "always truncated", fault: testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Action: testreg.Truncate(1000)}, wantErr: errBroken},
		{name: "lying length", fault: testreg.Fault{Method: "GET", Kind: testreg.KindBlob, PathContains: big.Hex, Action: testreg.LyingLength(int(size / 2))}, wantErr: ErrDigestMismatch},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			reg := testreg.New(t, testreg.WithFaults(tc.fault))
			reg.Push(t, "app:1", img)
			s := newStore(t)
			_, err := s.Pull(t.Context(), source(t, reg.Host, "app:1"), PullOptions{Platform: amd64})
			if !errors.Is(err, tc.wantErr) || (err == nil) != (tc.wantErr == nil) {
				t.Fatalf("Pull = %v, want %v", err, tc.wantErr)
			}
			if tc.ranged && len(reg.Counter.Ranges()) == 0 {
				t.Error("no Range request: the download was not resumed")
			}
			if tc.wantErr == nil {
				return
			}
			if s.Has(digest.Digest(big.String())) {
				t.Error("the faulty blob is in the store")
			}
			if recs, _ := s.Images(t.Context()); len(recs) != 0 {
				t.Errorf("index.json lists %+v after a failed pull", recs)
			}
		})
	}
}

// TestPullUnsupportedLayer: an encrypted layer is refused before any layer is fetched.
func TestPullUnsupportedLayer(t *testing.T) {
	reg := testreg.New(t)
	enc := testreg.RawLayer([]byte("not really encrypted"), "application/vnd.oci.image.layer.v1.tar+gzip+encrypted")
	reg.Push(t, "enc:1", testreg.OCIImage(t, "linux/amd64", enc))
	s := newStore(t)
	_, err := s.Pull(t.Context(), source(t, reg.Host, "enc:1"), PullOptions{Platform: amd64})
	if !errors.Is(err, ErrUnsupportedLayer) {
		t.Fatalf("Pull = %v, want ErrUnsupportedLayer", err)
	}
	if n := blobGets(reg, ""); n > 1 { // the config only
		t.Errorf("%d blob GETs for a refused image", n)
	}
}

// TestPullConcurrent: pulls of the same image and of different images into one store at
// the same time (separate Store values, as separate processes would have) all succeed,
// every blob is fetched once and index.json lists every image.
func TestPullConcurrent(t *testing.T) {
	reg := testreg.New(t)
	shared := testImage(t, "linux/amd64", 50, 400<<10)
	reg.Push(t, "same:1", shared)
	const others = 4
	for i := range others {
		reg.Push(t, "other:"+string(rune('a'+i)), testImage(t, "linux/amd64", uint64(60+i*10), 100<<10))
	}
	root := filepath.Join(t.TempDir(), "root")
	var wg sync.WaitGroup
	errs := make(chan error, 3+others)
	pull := func(ref string) {
		s, err := Open(root)
		if err == nil {
			_, err = s.Pull(t.Context(), source(t, reg.Host, ref), PullOptions{Platform: amd64})
		}
		errs <- err
	}
	for range 3 {
		wg.Go(func() { pull("same:1") })
	}
	for i := range others {
		wg.Go(func() { pull("other:" + string(rune('a'+i))) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	big, _ := largestLayer(t, shared)
	if n := blobGets(reg, big.Hex); n != 1 {
		t.Errorf("shared layer fetched %d times, want 1", n)
	}
	data, err := os.ReadFile(filepath.Join(root, "oci", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(data, &idx); err != nil {
		t.Fatalf("index.json: %v", err)
	}
	if len(idx.Manifests) != 1+others {
		t.Errorf("index.json has %d entries, want %d", len(idx.Manifests), 1+others)
	}
	s, _ := Open(root)
	rep, err := s.Verify(t.Context())
	if err != nil || len(rep.Corrupt) != 0 || len(rep.Missing) != 0 {
		t.Errorf("Verify = %+v, %v", rep, err)
	}
}

// TestLookupPinnedAndForeignPlatform: the pinned reference pull prints (NAME@index or
// manifest digest) finds an image pulled by tag, and with no --platform a single-platform
// image built for another architecture is pulled and found, as docker does, while an
// explicit platform stays strict.
func TestLookupPinnedAndForeignPlatform(t *testing.T) {
	reg := testreg.New(t)
	amd := testImage(t, "linux/amd64", 40, 10<<10)
	arm := testImage(t, "linux/arm64/v8", 41, 10<<10)
	idxDigest := reg.PushIndex(t, "multi:1", testreg.Index(t, amd, arm))
	s := newStore(t)
	img, err := s.Pull(t.Context(), source(t, reg.Host, "multi:1"), PullOptions{Platform: amd64})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range []digest.Digest{digest.Digest(idxDigest.String()), img.Record.Descriptor.Digest} {
		pinned := source(t, reg.Host, "multi@"+d.String()).Reference()
		rec, err := s.Lookup(t.Context(), pinned, amd64)
		if err != nil {
			t.Fatalf("Lookup(%s): %v", pinned, err)
		}
		if rec.Descriptor.Digest != img.Record.Descriptor.Digest {
			t.Errorf("Lookup(%s) = %s", pinned, rec.Descriptor.Digest)
		}
	}
	other := source(t, reg.Host, "multi@sha256:"+strings.Repeat("0", 64)).Reference()
	if _, err := s.Lookup(t.Context(), other, amd64); !errors.Is(err, ErrNotCached) {
		t.Errorf("Lookup(unknown digest) = %v, want ErrNotCached", err)
	}

	foreign := ocispec.Platform{OS: "linux", Architecture: "s390x"}
	if registry.HostPlatform().Architecture == foreign.Architecture {
		t.Skip("host is s390x")
	}
	reg.Push(t, "single:1", testImage(t, "linux/s390x", 42, 10<<10))
	src := source(t, reg.Host, "single:1")
	if _, err := s.Pull(t.Context(), src, PullOptions{Platform: amd64}); !errors.Is(err, registry.ErrNoMatchingPlatform) {
		t.Errorf("explicit linux/amd64 pull of an s390x image = %v, want ErrNoMatchingPlatform", err)
	}
	got, err := s.Pull(t.Context(), src, PullOptions{})
	if err != nil {
		t.Fatalf("pull with the default platform: %v", err)
	}
	if got.Record.Platform.Architecture != "s390x" {
		t.Errorf("record platform %+v, want s390x", got.Record.Platform)
	}
	if _, err := s.Lookup(t.Context(), src.Reference(), ocispec.Platform{}); err != nil {
		t.Errorf("Lookup with the default platform: %v", err)
	}
	if _, err := s.Lookup(t.Context(), src.Reference(), amd64); !errors.Is(err, ErrNotCached) {
		t.Errorf("strict Lookup(amd64) = %v, want ErrNotCached", err)
	}
}
