package layers

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func TestUncompressed(t *testing.T) {
	plain := testTar(t, 20, 100<<10)
	diffID := diffIDOf(plain)
	tests := []struct {
		name      string
		mediaType string
		blob      []byte
		diffID    digest.Digest
		damage    bool // flip a byte of the stored blob
		openErr   error
		readErr   error
	}{
		{name: "oci gzip", mediaType: ocispec.MediaTypeImageLayerGzip, blob: gzipBytes(t, plain), diffID: diffID},
		{name: "docker gzip", mediaType: mediaTypeDockerLayer, blob: gzipBytes(t, plain), diffID: diffID},
		{name: "oci zstd", mediaType: ocispec.MediaTypeImageLayerZstd, blob: zstdBytes(t, plain), diffID: diffID},
		{name: "plain tar", mediaType: ocispec.MediaTypeImageLayer, blob: plain, diffID: diffID},
		{name: "mislabelled: magic bytes win", mediaType: ocispec.MediaTypeImageLayerGzip, blob: zstdBytes(t, plain), diffID: diffID},
		{name: "diffID mismatch gzip", mediaType: ocispec.MediaTypeImageLayerGzip, blob: gzipBytes(t, plain), diffID: digest.FromString("other"), readErr: ErrDigestMismatch},
		{name: "diffID mismatch zstd", mediaType: ocispec.MediaTypeImageLayerZstd, blob: zstdBytes(t, plain), diffID: digest.FromString("other"), readErr: ErrDigestMismatch},
		{name: "diffID mismatch plain", mediaType: ocispec.MediaTypeImageLayer, blob: plain, diffID: digest.FromString("other"), readErr: ErrDigestMismatch},
		{name: "blob damaged after commit", mediaType: ocispec.MediaTypeImageLayer, blob: plain, diffID: diffID, damage: true, readErr: ErrDigestMismatch},
		{name: "encrypted", mediaType: ocispec.MediaTypeImageLayerGzip + "+encrypted", blob: gzipBytes(t, plain), diffID: diffID, openErr: ErrUnsupportedLayer},
		{name: "bad diffID", mediaType: ocispec.MediaTypeImageLayer, blob: plain, diffID: "sha256:zz", openErr: ErrInvalidDigest},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			desc := putLayer(t, s, tc.mediaType, tc.blob)
			if tc.damage {
				p := filepath.Join(s.blobs, desc.Digest.Encoded())
				b, _ := os.ReadFile(p)
				b[len(b)-2000] ^= 1 // inside a file's contents: only the digest notices
				if err := os.WriteFile(p, b, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			rc, err := s.Uncompressed(t.Context(), desc, tc.diffID)
			if !errors.Is(err, tc.openErr) || (err == nil) != (tc.openErr == nil) {
				t.Fatalf("Uncompressed: %v, want %v", err, tc.openErr)
			}
			if err != nil {
				return
			}
			got, err := io.ReadAll(rc)
			cerr := rc.Close()
			if !errors.Is(err, tc.readErr) || (err == nil) != (tc.readErr == nil) {
				t.Fatalf("read: %v, want %v", err, tc.readErr)
			}
			if !errors.Is(cerr, tc.readErr) || (cerr == nil) != (tc.readErr == nil) {
				t.Errorf("Close: %v, want %v", cerr, tc.readErr)
			}
			if tc.readErr == nil && !bytes.Equal(got, plain) {
				t.Error("uncompressed bytes differ")
			}
		})
	}
}

// TestUncompressedClose: a consumer that stops at the tar's end-of-archive gets the
// verification result from Close; one that abandons the stream early gets an error.
func TestUncompressedClose(t *testing.T) {
	plain := testTar(t, 8, 300<<10)
	s := newStore(t)
	desc := putLayer(t, s, ocispec.MediaTypeImageLayerGzip, gzipBytes(t, plain))

	for _, tc := range []struct {
		name   string
		diffID digest.Digest
		read   func(io.Reader) error
		want   error
	}{
		{name: "tar to end", diffID: diffIDOf(plain), read: readTar},
		{name: "tar to end, wrong diffID", diffID: digest.FromString("x"), read: readTar, want: ErrDigestMismatch},
		{name: "abandoned", diffID: diffIDOf(plain), read: func(r io.Reader) error {
			_, err := io.ReadFull(r, make([]byte, 1000))
			return err
		}, want: errNotVerified},
		{name: "nothing read", diffID: diffIDOf(plain), read: func(io.Reader) error { return nil }, want: errNotVerified},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc, err := s.Uncompressed(t.Context(), desc, tc.diffID)
			if err != nil {
				t.Fatal(err)
			}
			if err := tc.read(rc); err != nil {
				t.Fatal(err)
			}
			if err := rc.Close(); !errors.Is(err, tc.want) || (err == nil) != (tc.want == nil) {
				t.Errorf("Close = %v, want %v", err, tc.want)
			}
			if err := rc.Close(); err != nil {
				t.Errorf("second Close = %v", err)
			}
		})
	}
}

func readTar(r io.Reader) error {
	tr := tar.NewReader(r)
	for {
		_, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

func TestDetectCompression(t *testing.T) {
	for _, tc := range []struct {
		head []byte
		want Compression
	}{
		{[]byte{0x1f, 0x8b, 8, 0}, CompressionGzip},
		{[]byte{0x28, 0xb5, 0x2f, 0xfd}, CompressionZstd},
		{[]byte("dir/"), CompressionNone},
		{nil, CompressionNone},
	} {
		if got := DetectCompression(tc.head); got != tc.want {
			t.Errorf("DetectCompression(%x) = %v, want %v", tc.head, got, tc.want)
		}
	}
}
