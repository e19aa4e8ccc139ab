package layers

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// gatedReader serves r, but stops after gate bytes until open is closed.
type gatedReader struct {
	r    io.Reader
	gate int
	open chan struct{}
	n    int
}

func (g *gatedReader) Read(p []byte) (int, error) {
	if g.n >= g.gate {
		<-g.open
	} else if len(p) > g.gate-g.n {
		p = p[:g.gate-g.n]
	}
	k, err := g.r.Read(p)
	g.n += k
	return k, err
}

// followLayer runs ensureFollowed for a gzip layer served by f, and returns the layer that
// LayerStarted would hand over and the download's result channel.
func followLayer(t *testing.T, s *Store, desc ocispec.Descriptor, diffID digest.Digest, f Fetcher) (chan Layer, chan error) {
	t.Helper()
	started := make(chan Layer, 1)
	done := make(chan error, 1)
	go func() {
		done <- s.ensureFollowed(t.Context(), desc, f, nil, func(g *growth) {
			started <- Layer{Descriptor: desc, DiffID: diffID, store: s, grow: g}
		})
	}()
	return started, done
}

// TestFollowedDownload unpacks a layer while it downloads: its first bytes come out before
// the download is done, and the stream ends only once the blob is committed.
func TestFollowedDownload(t *testing.T) {
	s := newStore(t)
	raw := seededTar(t, 1, 40, 64<<10)
	blob := gzipBytes(t, raw)
	desc := descOf(ocispec.MediaTypeImageLayerGzip, blob)
	open := make(chan struct{})
	f := &sliceFetcher{data: blob, serve: func(n int, off int64, body []byte) (io.ReadCloser, int64, error) {
		return io.NopCloser(&gatedReader{r: bytes.NewReader(body), gate: len(body) / 2, open: open}), off, nil
	}}
	started, done := followLayer(t, s, desc, digest.FromBytes(raw), f)
	l := <-started
	rc, err := l.Uncompressed(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	// Half the blob is there and the download waits: some tar comes out already.
	head := make([]byte, 32<<10)
	if _, err := io.ReadFull(rc, head); err != nil {
		t.Fatalf("reading while the download waits: %v", err)
	}
	if s.Has(desc.Digest) {
		t.Fatal("blob committed before the gate opened")
	}
	close(open)
	rest, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("stream: %v", err)
	}
	if !s.Has(desc.Digest) {
		t.Error("stream ended before the blob was committed")
	}
	if got := append(head, rest...); !bytes.Equal(got, raw) {
		t.Errorf("streamed %d bytes, want the %d of the layer", len(got), len(raw))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	// Opened again after the commit: read from the store.
	rc2, err := l.Uncompressed(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(rc2); err != nil || !bytes.Equal(b, raw) {
		t.Errorf("after the commit: %d bytes, %v", len(b), err)
	}
	rc2.Close()
}

// TestFollowedDownloadWrongBytes: bytes that do not match the digest fail the stream with the
// download's error, and nothing is committed.
func TestFollowedDownloadWrongBytes(t *testing.T) {
	s := newStore(t)
	raw := seededTar(t, 2, 8, 16<<10)
	blob := gzipBytes(t, raw)
	desc := descOf(ocispec.MediaTypeImageLayerGzip, blob)
	evil := gzipBytes(t, seededTar(t, 3, 8, 16<<10))
	evil = append(evil, make([]byte, max(0, len(blob)-len(evil)))...)[:len(blob)]
	f := &sliceFetcher{data: evil}
	started, done := followLayer(t, s, desc, digest.FromBytes(raw), f)
	l := <-started
	rc, err := l.Uncompressed(t.Context())
	if err == nil {
		_, err = io.ReadAll(rc)
		rc.Close()
	}
	var de *DigestError
	if !errors.As(err, &de) {
		t.Errorf("stream of wrong bytes: %v, want a DigestError", err)
	}
	if derr := <-done; !errors.As(derr, &de) {
		t.Errorf("download: %v", derr)
	}
	if s.Has(desc.Digest) {
		t.Error("wrong bytes committed")
	}
}

// TestFollowedDownloadRestart: a download that has to start over from byte 0 (a server that
// ignores the Range of the resume) fails its followers with the retryable ErrStreamRestarted;
// the layer opened again reads the committed blob.
func TestFollowedDownloadRestart(t *testing.T) {
	s := newStore(t)
	raw := seededTar(t, 4, 40, 64<<10)
	blob := gzipBytes(t, raw)
	desc := descOf(ocispec.MediaTypeImageLayerGzip, blob)
	var mu sync.Mutex
	open := make(chan struct{})
	f := &sliceFetcher{data: blob, serve: func(n int, off int64, body []byte) (io.ReadCloser, int64, error) {
		mu.Lock()
		defer mu.Unlock()
		if n == 0 { // half the blob, then the connection breaks once the test has read some
			half := &gatedReader{r: bytes.NewReader(body[:len(body)/2]), gate: len(body) / 2, open: open}
			return io.NopCloser(&brokenReader{r: half, err: errConnReset}), off, nil
		}
		return io.NopCloser(bytes.NewReader(blob)), 0, nil // Range ignored: from byte 0
	}}
	started, done := followLayer(t, s, desc, digest.FromBytes(raw), f)
	l := <-started
	rc, err := l.Uncompressed(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(rc, make([]byte, 16<<10)); err != nil {
		t.Fatal(err)
	}
	close(open)
	_, err = io.ReadAll(rc)
	rc.Close()
	if !errors.Is(err, ErrStreamRestarted) {
		t.Fatalf("stream across a restart: %v, want ErrStreamRestarted", err)
	}
	var retry interface{ Retry() bool }
	if !errors.As(err, &retry) || !retry.Retry() {
		t.Errorf("%v is not retryable", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("download: %v", err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	rc, err = l.Uncompressed(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err != nil || !bytes.Equal(b, raw) {
		t.Errorf("after the restart: %d bytes, %v", len(b), err)
	}
}
