package layers

import (
	"context"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/imgrun/imgrun/internal/flock"
)

// lockFile takes an flock (unix.LOCK_EX or unix.LOCK_SH) on locks/name, waiting until it is
// free or ctx is done (internal/flock).
func (s *Store) lockFile(ctx context.Context, name string, how int) (*flock.Lock, error) {
	path := filepath.Join(s.locks, name)
	l, err := flock.Acquire(ctx, path, how)
	if err != nil {
		return nil, diskFull(path, err)
	}
	return l, nil
}

const (
	gcLockName    = "gc.lock"
	indexLockName = "index.lock"
)

func blobLockName(hex string) string { return "blob-" + hex + ".lock" }

// Hold keeps GC away: it takes ROOT/locks/gc.lock shared until release is called, so
// blobs, ingest files and tmp/ trees in use are not collected. Pull and Ensure hold it
// themselves; other packages building from the store (pkg/rootfs writing under tmp/)
// hold it around their work.
func (s *Store) Hold(ctx context.Context) (release func(), err error) {
	l, err := s.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return nil, err
	}
	return l.Unlock, nil
}
