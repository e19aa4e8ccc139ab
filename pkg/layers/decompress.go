package layers

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/gzip"
	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// Compression is how a layer blob is compressed.
type Compression int

const (
	CompressionNone Compression = iota // a plain tar
	CompressionGzip
	CompressionZstd
)

func (c Compression) String() string {
	switch c {
	case CompressionGzip:
		return "gzip"
	case CompressionZstd:
		return "zstd"
	}
	return "none"
}

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// maxZstdWindow bounds the memory a zstd layer may make the decoder allocate. 128 MiB is
// what `zstd --long` writes at most; ordinary layers use 8 MiB or less.
const maxZstdWindow = 128 << 20

// DetectCompression reads the magic bytes at the start of a blob. The bytes decide, not the
// media type: docker and containerd sniff too, and registries mislabel layers.
func DetectCompression(head []byte) Compression {
	switch {
	case bytes.HasPrefix(head, gzipMagic):
		return CompressionGzip
	case bytes.HasPrefix(head, zstdMagic):
		return CompressionZstd
	}
	return CompressionNone
}

// Uncompressed opens the layer blob desc and returns its uncompressed tar stream (gzip,
// zstd or plain, by magic bytes). The uncompressed bytes are hashed as they are read and
// Read returns a *DigestError (errors.Is ErrDigestMismatch) instead of io.EOF when they
// do not match diffID, after draining any bytes past the end of the compressed stream.
//
// The compressed bytes are not hashed again: they were verified when the blob was
// committed, and any change to them since (bit rot, tampering) changes the decompressed
// bytes or breaks the gzip/zstd checksums, so the diffID check catches it at a third of
// the cost (Verify re-hashes the blobs themselves). Every byte is hashed once on download
// and once, uncompressed, on unpack.
//
// Decompression and hashing run in their own goroutine, a few chunks ahead of the reader,
// so that the caller (tar extraction) uses the second core. Close stops it. Close also
// finishes a stream the caller stopped reading just short of its end (a tar reader stops
// at the end-of-archive blocks) and returns the verification result; a stream abandoned
// earlier is reported as not verified.
func (s *Store) Uncompressed(ctx context.Context, desc ocispec.Descriptor, diffID digest.Digest) (io.ReadCloser, error) {
	rc, err := s.uncompressed(ctx, desc, diffID)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", desc.Digest, err)
	}
	return rc, nil
}

func (s *Store) uncompressed(ctx context.Context, desc ocispec.Descriptor, diffID digest.Digest) (io.ReadCloser, error) {
	if strings.Contains(desc.MediaType, "+encrypted") {
		return nil, fmt.Errorf("media type %s: %w", desc.MediaType, ErrUnsupportedLayer)
	}
	if err := validDigest(diffID); err != nil {
		return nil, fmt.Errorf("diffID: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	rc, fi, err := s.openBlob(desc.Digest)
	if err != nil {
		return nil, err
	}
	if fi.Size() != desc.Size {
		rc.Close()
		return nil, fmt.Errorf("blob is %d bytes, descriptor says %d: %w", fi.Size(), desc.Size, ErrSizeMismatch)
	}
	return decompress(ctx, rc, diffID)
}

// decompress starts the decoding pipeline on the compressed stream rc, which it closes.
func decompress(ctx context.Context, rc io.ReadCloser, diffID digest.Digest) (io.ReadCloser, error) {
	br := bufio.NewReaderSize(rc, 64<<10)
	head, err := br.Peek(len(zstdMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		rc.Close()
		return nil, err
	}
	var dec io.Reader
	closeDec := func() {}
	switch DetectCompression(head) {
	case CompressionGzip:
		zr, err := gzip.NewReader(br)
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("gzip: %w", err)
		}
		dec, closeDec = zr, func() { zr.Close() }
	case CompressionZstd:
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1), // synchronous: we already decode in our own goroutine
			zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderMaxMemory(maxZstdWindow))
		if err != nil {
			rc.Close()
			return nil, fmt.Errorf("zstd: %w", err)
		}
		dec, closeDec = zr, zr.Close
	default:
		dec = br
	}
	return startPipe(ctx, dec, br, diffID, func() { closeDec(); rc.Close() }), nil
}
