package layers

import (
	"errors"
	"io"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// FuzzUncompressed feeds arbitrary blobs to the decompressing reader: it must never
// panic or hang, and it may only end with io.EOF when the bytes hash to the diffID.
func FuzzUncompressed(f *testing.F) {
	plain := testTar(f, 2, 100)
	f.Add(plain, false)
	f.Add(gzipBytes(f, plain), false)
	f.Add(zstdBytes(f, plain), false)
	f.Add(gzipBytes(f, plain)[:40], true)
	f.Add([]byte{0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0}, false)
	s := newStore(f)
	f.Fuzz(func(t *testing.T, blob []byte, alsoRight bool) {
		desc := descOf(ocispec.MediaTypeImageLayerGzip, blob)
		if err := s.putBlob(desc.Digest, blob); err != nil {
			t.Fatal(err)
		}
		rc, err := s.Uncompressed(t.Context(), desc, digest.FromString("wrong"))
		if err != nil {
			return
		}
		_, rerr := io.Copy(io.Discard, rc)
		rc.Close()
		if rerr == nil {
			t.Fatal("a stream with a wrong diffID read to a clean EOF")
		}
		if !alsoRight {
			return
		}
		// With the right diffID, whatever decodes cleanly verifies.
		var de *DigestError
		if errors.As(rerr, &de) && de.What == "layer diffID" {
			rc, err := s.Uncompressed(t.Context(), desc, de.Got)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("the stream's own diffID does not verify: %v", err)
			}
			if err := rc.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
}
