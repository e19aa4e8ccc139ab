package layers

import (
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/imgrun/imgrun/pkg/registry"
)

// Sentinel errors. Every error this package returns for one of these conditions wraps the
// matching sentinel, so callers decide with errors.Is and never match strings.
var (
	// ErrNotFound: the blob is not in the store.
	ErrNotFound = errors.New("blob not found")
	// ErrDigestMismatch: bytes do not hash to the digest that names them. The concrete
	// error is a *DigestError. It is registry.ErrDigestMismatch, so one errors.Is test
	// covers a mismatch found by the registry client (a pinned manifest) and by the store.
	ErrDigestMismatch = registry.ErrDigestMismatch
	// ErrSizeMismatch: a blob is shorter or longer than its descriptor says.
	ErrSizeMismatch = errors.New("size mismatch")
	// ErrUnsupportedLayer: a layer media type imgrun cannot unpack (encrypted,
	// foreign without URLs, not a layer at all).
	ErrUnsupportedLayer = errors.New("unsupported layer")
	// ErrNotCached: the image (reference, platform) is not in the store's index.json, or
	// some of its blobs are missing.
	ErrNotCached = errors.New("image not cached")
	// ErrInvalidDigest: a digest is malformed or not sha256; it is never used as a path.
	ErrInvalidDigest = errors.New("invalid digest")
	// ErrNoSpace: the filesystem holding the store is full. The concrete error is a
	// *DiskFullError naming the file being written.
	ErrNoSpace = errors.New("no space left on device")
)

// DigestError reports bytes whose sha256 is not the one expected. errors.Is(err,
// ErrDigestMismatch) is true for it.
type DigestError struct {
	What string // "blob", "layer diffID", …
	Want digest.Digest
	Got  digest.Digest
}

func (e *DigestError) Error() string {
	what := e.What
	if what == "" {
		what = "blob"
	}
	return fmt.Sprintf("%s digest mismatch: want %s, got %s", what, e.Want, e.Got)
}

// Is makes errors.Is(err, ErrDigestMismatch) true.
func (e *DigestError) Is(target error) bool { return target == ErrDigestMismatch }

// DiskFullError reports that writing Path failed because its filesystem is full (ENOSPC
// or EDQUOT). errors.Is(err, ErrNoSpace) is true, and it unwraps to the system error.
type DiskFullError struct {
	Path string
	Err  error
}

func (e *DiskFullError) Error() string {
	return fmt.Sprintf("no space left on device writing %s (free space on that filesystem or use another --root)", e.Path)
}

// Is makes errors.Is(err, ErrNoSpace) true.
func (e *DiskFullError) Is(target error) bool { return target == ErrNoSpace }

// Unwrap returns the system error (syscall.ENOSPC inside an *fs.PathError).
func (e *DiskFullError) Unwrap() error { return e.Err }
