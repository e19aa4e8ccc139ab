package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"os"

	"github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// fileLayer is a gzip layer already written to a file, with both digests computed while it
// was written (go-containerregistry's tarball layers would read and gunzip it again for them).
type fileLayer struct {
	path   string
	digest v1.Hash
	diffID v1.Hash
	size   int64
	stats  layerStats
}

var _ v1.Layer = (*fileLayer)(nil)

func (l *fileLayer) Digest() (v1.Hash, error)            { return l.digest, nil }
func (l *fileLayer) DiffID() (v1.Hash, error)            { return l.diffID, nil }
func (l *fileLayer) Size() (int64, error)                { return l.size, nil }
func (l *fileLayer) MediaType() (types.MediaType, error) { return types.OCILayer, nil }
func (l *fileLayer) Compressed() (io.ReadCloser, error)  { return os.Open(l.path) }

func (l *fileLayer) Uncompressed() (io.ReadCloser, error) {
	f, err := os.Open(l.path)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		f.Close()
		return nil, err
	}
	return readCloser{zr, f}, nil
}

type readCloser struct {
	io.Reader
	f *os.File
}

func (r readCloser) Close() error { return r.f.Close() }

// buildLayer writes dir as a gzip layer to path, hashing the tar (diff ID) and the gzip
// stream (digest) on the way.
func buildLayer(ctx context.Context, path, dir string, upper bool, excludes []string, level int) (*fileLayer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	blob := sha256.New()
	counter := &countWriter{}
	diff := sha256.New()
	pr, pw := io.Pipe()
	// The tar is hashed for the diff ID in its own goroutine so that hashing and gzip
	// overlap.
	type result struct {
		stats layerStats
		err   error
	}
	done := make(chan result, 1)
	go func() {
		st, err := writeTar(ctx, pw, dir, upper, excludes)
		pw.CloseWithError(err)
		done <- result{st, err}
	}()
	zw, err := gzip.NewWriterLevel(io.MultiWriter(f, blob, counter), level)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.MultiWriter(zw, diff), pr); err != nil {
		pr.CloseWithError(err)
		<-done
		return nil, fmt.Errorf("layer %s: %w", dir, err)
	}
	res := <-done
	if res.err != nil {
		return nil, res.err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("layer %s: gzip: %w", dir, err)
	}
	if err := f.Close(); err != nil {
		return nil, err
	}
	return &fileLayer{
		path:   path,
		digest: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", blob.Sum(nil))},
		diffID: v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", diff.Sum(nil))},
		size:   counter.n,
		stats:  res.stats,
	}, nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }
