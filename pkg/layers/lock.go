package layers

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// fileLock is a held flock(2) on a file under ROOT/locks. flock locks belong to the open
// file description, so they work between goroutines of one process as well as between
// processes, and the kernel drops them when a process dies (kill -9 included).
type fileLock struct{ f *os.File }

// lockFile takes an flock (unix.LOCK_EX or unix.LOCK_SH) on locks/name, waiting until it is
// free or ctx is done. flock cannot be interrupted, so it polls with LOCK_NB instead of
// blocking a thread that could not be cancelled.
func (s *Store) lockFile(ctx context.Context, name string, how int) (*fileLock, error) {
	path := filepath.Join(s.locks, name)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, diskFull(path, fmt.Errorf("open lock: %w", err))
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &fileLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", path, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, maxLockPoll)
	}
}

// Unlock releases the lock (closing the file releases it).
func (l *fileLock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// maxLockPoll bounds the wait between two tries: small, so that GC gets its turn in the
// short gaps between pulls (flock has no queue to wait in without blocking a thread).
const maxLockPoll = 10 * time.Millisecond

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
