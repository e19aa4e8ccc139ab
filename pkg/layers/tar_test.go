package layers

import (
	"archive/tar"
	"bytes"
	"fmt"
	"testing"
	"time"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// testTar builds a deterministic tar with files named f0..f(n-1) of size bytes each.
func testTar(t testing.TB, n, size int) []byte {
	t.Helper()
	return seededTar(t, 0, n, size)
}

// seededTar is testTar with contents varied by seed.
func seededTar(t testing.TB, seed uint64, n, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	mtime := time.Unix(1700000000, 0)
	if err := tw.WriteHeader(&tar.Header{Name: "dir/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: mtime}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		body := randomBytes(seed<<32+uint64(i), size)
		// Half text-like, half random: compressible like a real layer.
		for j := 0; j < len(body)/2; j++ {
			body[j] = "abcdefgh\n"[body[j]%9]
		}
		hdr := &tar.Header{Name: fmt.Sprintf("dir/f%d", i), Mode: 0o644, Size: int64(size), ModTime: mtime}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(body)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzipBytes(t testing.TB, b []byte) []byte {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func zstdBytes(t testing.TB, b []byte) []byte {
	zw, err := zstd.NewWriter(nil)
	if err != nil {
		t.Fatal(err)
	}
	return zw.EncodeAll(b, nil)
}

// putLayer stores blob as a verified blob and returns its descriptor.
func putLayer(t testing.TB, s *Store, mediaType string, blob []byte) ocispec.Descriptor {
	t.Helper()
	d := descOf(mediaType, blob)
	if err := s.putBlob(d.Digest, blob); err != nil {
		t.Fatal(err)
	}
	return d
}

func diffIDOf(b []byte) digest.Digest { return digest.FromBytes(b) }
