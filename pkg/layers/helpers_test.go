package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// newStore opens a store in a fresh temporary directory.
func newStore(t testing.TB) *Store {
	t.Helper()
	s, err := Open(filepath.Join(t.TempDir(), "root"))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// randomBytes returns n deterministic pseudo-random bytes.
func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

func descOf(mediaType string, b []byte) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mediaType, Digest: digest.FromBytes(b), Size: int64(len(b))}
}

// sliceFetcher serves a byte slice as a Fetcher, honouring offsets like a registry that
// supports Range. serve may replace the body of a call (n counts calls from 0).
type sliceFetcher struct {
	data  []byte
	serve func(n int, off int64, body []byte) (io.ReadCloser, int64, error)

	mu      sync.Mutex
	offsets []int64
}

func (f *sliceFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor, off int64) (io.ReadCloser, int64, error) {
	f.mu.Lock()
	n := len(f.offsets)
	f.offsets = append(f.offsets, off)
	f.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	body := f.data[min(int(off), len(f.data)):]
	if f.serve != nil {
		return f.serve(n, off, body)
	}
	return io.NopCloser(bytes.NewReader(body)), off, nil
}

func (f *sliceFetcher) calls() []int64 {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]int64(nil), f.offsets...)
}

// brokenReader returns data and then err instead of io.EOF (a connection that broke).
type brokenReader struct {
	r   io.Reader
	err error
}

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF {
		err = b.err
	}
	return n, err
}

var errConnReset = errors.New("connection reset by peer (test)")

// blobFiles lists the names under blobs/sha256 and ingest/.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	es, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
