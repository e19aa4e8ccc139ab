package layers

import (
	"bytes"
	"crypto/sha256"
	"io"
	"testing"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// benchLayer is a deterministic ~8 MB tar, compressible like a real layer.
func benchLayer(b *testing.B) []byte {
	b.Helper()
	return testTar(b, 64, 128<<10)
}

func BenchmarkDigest(b *testing.B) {
	data := benchLayer(b)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		h := sha256.New()
		h.Write(data)
		h.Sum(nil)
	}
}

// BenchmarkGunzipRaw is the floor: klauspost gzip alone, no verification, no pipe.
func BenchmarkGunzipRaw(b *testing.B) {
	plain := benchLayer(b)
	gz := gzipBytes(b, plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkZstdRaw is the zstd floor.
func BenchmarkZstdRaw(b *testing.B) {
	plain := benchLayer(b)
	zs := zstdBytes(b, plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		zr, err := zstd.NewReader(bytes.NewReader(zs), zstd.WithDecoderConcurrency(1))
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, zr); err != nil {
			b.Fatal(err)
		}
		zr.Close()
	}
}

func benchUncompressed(b *testing.B, mediaType string, blob, plain []byte) {
	s := newStore(b)
	desc := putLayer(b, s, mediaType, blob)
	diffID := diffIDOf(plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		rc, err := s.Uncompressed(b.Context(), desc, diffID)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			b.Fatal(err)
		}
		if err := rc.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkUncompressedGzip is the whole unpack read path: blob file, compressed digest,
// gunzip, diffID digest, pipe to the consumer.
func BenchmarkUncompressedGzip(b *testing.B) {
	plain := benchLayer(b)
	benchUncompressed(b, ocispec.MediaTypeImageLayerGzip, gzipBytes(b, plain), plain)
}

func BenchmarkUncompressedZstd(b *testing.B) {
	plain := benchLayer(b)
	benchUncompressed(b, ocispec.MediaTypeImageLayerZstd, zstdBytes(b, plain), plain)
}

func BenchmarkUncompressedPlain(b *testing.B) {
	plain := benchLayer(b)
	benchUncompressed(b, ocispec.MediaTypeImageLayer, plain, plain)
}

// BenchmarkEnsure measures download into the store: hash, write, fsync, rename.
func BenchmarkEnsure(b *testing.B) {
	data := benchLayer(b)
	desc := descOf(ocispec.MediaTypeImageLayer, data)
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		b.StopTimer()
		s := newStore(b)
		b.StartTimer()
		if err := s.Ensure(b.Context(), desc, &sliceFetcher{data: data}, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkGunzipDigestRaw is gunzip plus the diffID hash, in one goroutine: the work
// Uncompressed must do, without its pipe.
func BenchmarkGunzipDigestRaw(b *testing.B) {
	plain := benchLayer(b)
	gz := gzipBytes(b, plain)
	b.SetBytes(int64(len(plain)))
	for b.Loop() {
		zr, err := gzip.NewReader(bytes.NewReader(gz))
		if err != nil {
			b.Fatal(err)
		}
		h := sha256.New()
		if _, err := io.Copy(h, zr); err != nil {
			b.Fatal(err)
		}
	}
}
