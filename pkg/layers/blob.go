package layers

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// validDigest accepts only well-formed sha256 digests: a digest from a manifest is
// attacker-controlled and becomes a file name.
func validDigest(d digest.Digest) error {
	if err := d.Validate(); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidDigest, d, err)
	}
	if d.Algorithm() != digest.SHA256 {
		return fmt.Errorf("%w %q: only sha256 is supported", ErrInvalidDigest, d)
	}
	return nil
}

// blobPath is where a verified blob lives; it validates the digest first.
func (s *Store) blobPath(d digest.Digest) (string, error) {
	if err := validDigest(d); err != nil {
		return "", err
	}
	return filepath.Join(s.blobs, d.Encoded()), nil
}

// Has reports whether a verified blob with this digest is in the store.
func (s *Store) Has(d digest.Digest) bool {
	p, err := s.blobPath(d)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.Mode().IsRegular()
}

// openBlob opens a blob file without following symlinks (an imported or tampered layout
// could hold blobs/sha256/<d> -> /etc/shadow).
func (s *Store) openBlob(d digest.Digest) (*os.File, fs.FileInfo, error) {
	p, err := s.blobPath(d)
	if err != nil {
		return nil, nil, err
	}
	f, err := os.OpenFile(p, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_CLOEXEC, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil, fmt.Errorf("blob %s: %w", d, ErrNotFound)
	case errors.Is(err, syscall.ELOOP):
		return nil, nil, fmt.Errorf("blob %s: is a symlink, refusing it: %w", d, ErrNotFound)
	case err != nil:
		return nil, nil, fmt.Errorf("blob %s: %w", d, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, fmt.Errorf("blob %s: %w", d, err)
	}
	if !fi.Mode().IsRegular() {
		f.Close()
		return nil, nil, fmt.Errorf("blob %s: not a regular file: %w", d, ErrNotFound)
	}
	return f, fi, nil
}

// removeCorrupt deletes a blob whose bytes were proven wrong, but only if the path still
// names the file that was read (fi): a correct copy may have replaced it meanwhile.
func (s *Store) removeCorrupt(d digest.Digest, fi fs.FileInfo) {
	p, err := s.blobPath(d)
	if err != nil {
		return
	}
	now, err := os.Lstat(p)
	if err != nil || !os.SameFile(now, fi) {
		return
	}
	if err := os.Remove(p); err == nil {
		s.log.Warn("removed corrupt blob", "digest", d)
		syncDir(s.blobs)
	}
}

// ReadBlob returns the bytes of a small blob (manifest, index, config), at most limit
// bytes long, verified against d. A blob whose bytes do not match is removed from the
// store (so that the next pull fetches it again) and reported as a *DigestError.
func (s *Store) ReadBlob(ctx context.Context, d digest.Digest, limit int64) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, fi, err := s.openBlob(d)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi.Size() > limit {
		return nil, fmt.Errorf("blob %s is %d bytes, over the limit of %d: %w", d, fi.Size(), limit, ErrSizeMismatch)
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read blob %s: %w", d, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("blob %s grew over the limit of %d: %w", d, limit, ErrSizeMismatch)
	}
	if got := digest.SHA256.FromBytes(data); got != d {
		s.removeCorrupt(d, fi)
		return nil, fmt.Errorf("read blob: %w", &DigestError{Want: d, Got: got})
	}
	return data, nil
}

// OpenBlob opens a blob for streaming. The reader checks size and digest as it goes and
// returns an error (*DigestError, ErrSizeMismatch) instead of io.EOF when they differ.
func (s *Store) OpenBlob(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f, fi, err := s.openBlob(desc.Digest)
	if err != nil {
		return nil, err
	}
	if fi.Size() != desc.Size {
		f.Close()
		return nil, fmt.Errorf("blob %s is %d bytes, descriptor says %d: %w", desc.Digest, fi.Size(), desc.Size, ErrSizeMismatch)
	}
	return newVerifier(f, desc, "blob"), nil
}

// putBlob commits a small blob already in memory (manifest, index, config) after checking
// that data hashes to d. Concurrent writers of the same digest are harmless: each renames
// identical, verified bytes into place.
func (s *Store) putBlob(d digest.Digest, data []byte) error {
	p, err := s.blobPath(d)
	if err != nil {
		return err
	}
	if got := digest.SHA256.FromBytes(data); got != d {
		return &DigestError{Want: d, Got: got}
	}
	if s.Has(d) {
		return nil
	}
	f, err := os.CreateTemp(s.ingest, "put-*.tmp")
	if err != nil {
		return diskFull(s.ingest, fmt.Errorf("store blob %s: %w", d, err))
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, p)
	}
	if err != nil {
		os.Remove(tmp)
		return diskFull(tmp, fmt.Errorf("store blob %s: %w", d, err))
	}
	return diskFull(s.blobs, syncDir(s.blobs))
}
