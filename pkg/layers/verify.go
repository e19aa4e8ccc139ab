package layers

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/opencontainers/go-digest"

	"github.com/imgrun/imgrun/pkg/registry"
)

// VerifyReport says what Verify found.
type VerifyReport struct {
	Checked int             // blobs re-hashed
	Bytes   int64           // bytes re-hashed
	Corrupt []digest.Digest // blobs whose bytes did not match their name; removed
	Missing []MissingBlob   // blobs index.json entries need that are not in the store
}

// MissingBlob is a blob an image needs that the store does not hold.
type MissingBlob struct {
	Ref    string
	Digest digest.Digest
}

// Verify re-hashes every blob. A blob whose bytes do not match its name is removed, so the
// next pull fetches it again, and reported. It then reports every blob the index.json
// entries need (manifest, config, layers) that is missing.
func (s *Store) Verify(ctx context.Context) (VerifyReport, error) {
	var rep VerifyReport
	release, err := s.Hold(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	defer release()
	entries, err := os.ReadDir(s.blobs)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	buf := make([]byte, 1<<20)
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		d := digest.NewDigestFromEncoded(digest.SHA256, e.Name())
		ok, n, err := s.verifyBlob(d, buf)
		if err != nil {
			return rep, fmt.Errorf("verify: %w", err)
		}
		rep.Checked++
		rep.Bytes += n
		if !ok {
			rep.Corrupt = append(rep.Corrupt, d)
		}
	}

	recs, err := s.Images(ctx)
	if err != nil {
		return rep, fmt.Errorf("verify: %w", err)
	}
	for _, r := range recs {
		for _, d := range s.needs(ctx, r) {
			if !s.Has(d) {
				rep.Missing = append(rep.Missing, MissingBlob{Ref: r.Ref, Digest: d})
			}
		}
	}
	return rep, nil
}

// verifyBlob re-hashes one blob file; a file that is not a valid blob (wrong bytes, a bad
// name, a symlink, a directory) is removed and reported as not ok.
func (s *Store) verifyBlob(d digest.Digest, buf []byte) (ok bool, n int64, err error) {
	if validDigest(d) != nil {
		return false, 0, os.RemoveAll(filepath.Join(s.blobs, d.Encoded()))
	}
	p, _ := s.blobPath(d)
	f, fi, err := s.openBlob(d)
	if err != nil {
		// A symlink or other non-file: not a blob.
		if fi, lerr := os.Lstat(p); lerr == nil && !fi.Mode().IsRegular() {
			return false, 0, os.RemoveAll(p)
		}
		return true, 0, nil // removed meanwhile
	}
	defer f.Close()
	h := sha256.New()
	n, err = io.CopyBuffer(h, f, buf)
	if err != nil {
		return false, n, fmt.Errorf("read %s: %w", p, err)
	}
	if digest.NewDigest(digest.SHA256, h) != d {
		s.removeCorrupt(d, fi)
		return false, n, nil
	}
	return true, n, nil
}

// needs lists the blobs an image record needs: its manifest, and when that is readable,
// its config and layers.
func (s *Store) needs(ctx context.Context, r Record) []digest.Digest {
	out := []digest.Digest{r.Descriptor.Digest}
	data, err := s.ReadBlob(ctx, r.Descriptor.Digest, registry.MaxManifestSize)
	if err != nil {
		return out
	}
	var doc document
	if json.Unmarshal(data, &doc) != nil {
		return out
	}
	if doc.Config != nil {
		out = append(out, doc.Config.Digest)
	}
	for _, l := range doc.Layers {
		out = append(out, l.Digest)
	}
	return out
}
