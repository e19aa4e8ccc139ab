package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestEnsure(t *testing.T) {
	data := randomBytes(1, 3<<20+17)
	desc := descOf(ocispec.MediaTypeImageLayerGzip, data)
	half := int64(len(data) / 2)
	corrupt := bytes.Clone(data)
	corrupt[len(corrupt)/3] ^= 0xff

	tests := []struct {
		name     string
		desc     ocispec.Descriptor
		partial  []byte // left in ingest/ by an earlier, interrupted download
		serve    func(n int, off int64, body []byte) (io.ReadCloser, int64, error)
		wantErr  error
		offsets  []int64 // the offsets Fetch was called with
		keepPart bool    // the partial file must be kept (for a later resume)
	}{
		{name: "ok", desc: desc, offsets: []int64{0}},
		{
			name: "corrupt byte", desc: desc, wantErr: ErrDigestMismatch, offsets: []int64{0},
			serve: func(_ int, _ int64, _ []byte) (io.ReadCloser, int64, error) {
				return io.NopCloser(bytes.NewReader(corrupt)), 0, nil
			},
		},
		{
			name: "longer than its size", desc: desc, wantErr: ErrSizeMismatch, offsets: []int64{0},
			serve: func(_ int, _ int64, body []byte) (io.ReadCloser, int64, error) {
				return io.NopCloser(io.MultiReader(bytes.NewReader(body), bytes.NewReader([]byte("x")))), 0, nil
			},
		},
		{
			name: "always truncated", desc: desc, wantErr: errBroken, keepPart: true,
			offsets: []int64{0, 1000, 2000, 3000, 4000},
			serve: func(_ int, off int64, body []byte) (io.ReadCloser, int64, error) {
				return io.NopCloser(bytes.NewReader(body[:1000])), off, nil
			},
		},
		{
			name: "broken mid-stream then resumed", desc: desc, offsets: []int64{0, half},
			serve: func(n int, off int64, body []byte) (io.ReadCloser, int64, error) {
				if n == 0 {
					return io.NopCloser(&brokenReader{bytes.NewReader(body[:half]), errConnReset}), 0, nil
				}
				return io.NopCloser(bytes.NewReader(body)), off, nil
			},
		},
		{name: "resume from partial", desc: desc, partial: data[:half], offsets: []int64{half}},
		{
			name: "resume ignored by server", desc: desc, partial: data[:half], offsets: []int64{half},
			serve: func(_ int, _ int64, _ []byte) (io.ReadCloser, int64, error) {
				return io.NopCloser(bytes.NewReader(data)), 0, nil // 200 with the whole blob
			},
		},
		{name: "complete partial", desc: desc, partial: data, offsets: nil},
		{name: "garbage partial restarts", desc: desc, partial: corrupt[:half], offsets: []int64{half, 0}},
		{name: "oversized partial", desc: desc, partial: append(bytes.Clone(data), 1), offsets: []int64{0}},
		{
			name: "bad digest", wantErr: ErrInvalidDigest,
			desc: ocispec.Descriptor{Digest: "sha256:../../etc/passwd", Size: 3},
		},
		{name: "empty blob", desc: descOf(ocispec.MediaTypeImageLayer, nil), offsets: nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			partial := filepath.Join(s.ingest, tc.desc.Digest.Encoded()+".partial")
			if tc.partial != nil {
				if err := os.WriteFile(partial, tc.partial, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			f := &sliceFetcher{data: data, serve: tc.serve}
			err := s.Ensure(t.Context(), tc.desc, f, nil)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
				t.Fatalf("Ensure: got %v, want %v", err, tc.wantErr)
			}
			if got := f.calls(); !slices.Equal(got, tc.offsets) {
				t.Errorf("fetch offsets = %v, want %v", got, tc.offsets)
			}
			if tc.wantErr != nil {
				if s.Has(tc.desc.Digest) {
					t.Error("failed blob is in the store")
				}
				if len(dirNames(t, s.blobs)) != 0 {
					t.Errorf("blobs/ holds %v", dirNames(t, s.blobs))
				}
				if _, err := os.Stat(partial); (err == nil) != tc.keepPart {
					t.Errorf("partial file kept = %v, want %v", err == nil, tc.keepPart)
				}
				return
			}
			got, err := os.ReadFile(filepath.Join(s.blobs, tc.desc.Digest.Encoded()))
			if err != nil {
				t.Fatal(err)
			}
			if tc.desc.Size > 0 && !bytes.Equal(got, data) {
				t.Error("stored bytes differ")
			}
			if names := dirNames(t, s.ingest); len(names) != 0 {
				t.Errorf("ingest/ left with %v", names)
			}
			// Present now: a second Ensure sends no request.
			f2 := &sliceFetcher{data: data}
			if err := s.Ensure(t.Context(), tc.desc, f2, nil); err != nil || len(f2.calls()) != 0 {
				t.Errorf("second Ensure: err %v, %d fetches", err, len(f2.calls()))
			}
		})
	}
}

func TestEnsureProgress(t *testing.T) {
	data := randomBytes(2, 1<<20)
	desc := descOf(ocispec.MediaTypeImageLayer, data)
	s := newStore(t)
	var mu sync.Mutex
	var kinds []EventKind
	var last int64
	p := func(e Event) {
		mu.Lock()
		defer mu.Unlock()
		if len(kinds) == 0 || kinds[len(kinds)-1] != e.Kind {
			kinds = append(kinds, e.Kind)
		}
		if e.Kind == EventLayerBytes {
			last = e.Done
		}
	}
	if err := s.Ensure(t.Context(), desc, &sliceFetcher{data: data}, p); err != nil {
		t.Fatal(err)
	}
	if err := s.Ensure(t.Context(), desc, &sliceFetcher{data: data}, p); err != nil {
		t.Fatal(err)
	}
	want := []EventKind{EventLayerStart, EventLayerBytes, EventLayerDone, EventLayerCached}
	if !slices.Equal(kinds, want) || last != desc.Size {
		t.Errorf("events %v (last bytes %d), want %v ending at %d", kinds, last, want, desc.Size)
	}
}

// TestEnsureConcurrentGoroutines: many goroutines ensure the same blob; it is fetched
// once and stored once.
func TestEnsureConcurrentGoroutines(t *testing.T) {
	data := randomBytes(3, 2<<20)
	desc := descOf(ocispec.MediaTypeImageLayer, data)
	s := newStore(t)
	f := &sliceFetcher{data: data}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() { errs <- s.Ensure(t.Context(), desc, f, nil) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if n := len(f.calls()); n != 1 {
		t.Errorf("blob fetched %d times, want 1", n)
	}
	if got, _ := os.ReadFile(filepath.Join(s.blobs, desc.Digest.Encoded())); !bytes.Equal(got, data) {
		t.Error("stored bytes differ")
	}
}

func TestEnsureCancelKeepsPartial(t *testing.T) {
	data := randomBytes(4, 1<<20)
	desc := descOf(ocispec.MediaTypeImageLayer, data)
	s := newStore(t)
	ctx, cancel := context.WithCancel(t.Context())
	f := &sliceFetcher{data: data, serve: func(_ int, off int64, body []byte) (io.ReadCloser, int64, error) {
		return io.NopCloser(&cancelAfter{r: bytes.NewReader(body), n: 300 << 10, cancel: cancel}), off, nil
	}}
	err := s.Ensure(ctx, desc, f, nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Ensure = %v, want context.Canceled", err)
	}
	fi, err := os.Stat(filepath.Join(s.ingest, desc.Digest.Encoded()+".partial"))
	if err != nil || fi.Size() == 0 {
		t.Fatalf("partial file not kept: %v", err)
	}
	// The next Ensure resumes where the cancelled one stopped.
	f2 := &sliceFetcher{data: data}
	if err := s.Ensure(t.Context(), desc, f2, nil); err != nil {
		t.Fatal(err)
	}
	if got := f2.calls(); len(got) != 1 || got[0] != fi.Size() {
		t.Errorf("resume offsets %v, want [%d]", got, fi.Size())
	}
}

// cancelAfter cancels a context once n bytes were read, then fails like a body whose
// request context ended.
type cancelAfter struct {
	r      io.Reader
	n      int
	cancel context.CancelFunc
}

func (c *cancelAfter) Read(p []byte) (int, error) {
	if c.n <= 0 {
		c.cancel()
		return 0, context.Canceled
	}
	p = p[:min(len(p), c.n)]
	n, err := c.r.Read(p)
	c.n -= n
	return n, err
}
