// Package flock takes flock(2) locks on lock files, waiting in a way a context can cancel.
//
// flock locks belong to the open file description, so they exclude goroutines of one process
// as well as other processes, and the kernel drops them when the holder dies (kill -9
// included): a crashed imgrun never leaves a lock behind. pkg/layers and pkg/rootfs share
// ROOT/locks through this package.
package flock

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// ErrBusy is returned by TryAcquire when another holder has the lock.
var ErrBusy = errors.New("lock is held")

// maxPoll bounds the wait between two tries: small, so that an exclusive taker (gc) gets its
// turn in the short gaps between shared holders (flock has no queue one can wait in without
// blocking a thread that ctx could not interrupt).
const maxPoll = 10 * time.Millisecond

// Lock is a held lock; Unlock releases it.
type Lock struct{ f *os.File }

// Unlock releases the lock (closing the file releases it). It is safe to call twice.
func (l *Lock) Unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

// open opens (creating, 0600, never through a symlink) the lock file path.
func open(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
}

// Acquire takes how (unix.LOCK_EX or unix.LOCK_SH) on path, waiting until it is free or ctx
// is done. flock cannot be interrupted, so it polls with LOCK_NB (1 ms, doubling to 10 ms).
func Acquire(ctx context.Context, path string, how int) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &Lock{f: f}, nil
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
		wait = min(wait*2, maxPoll)
	}
}

// TryAcquire takes how on path without waiting; ErrBusy when it is held.
func TryAcquire(path string, how int) (*Lock, error) {
	f, err := open(path)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, fmt.Errorf("%s: %w", path, ErrBusy)
		}
		return nil, fmt.Errorf("lock %s: %w", path, err)
	}
	return &Lock{f: f}, nil
}

// Downgrade turns a held exclusive lock into a shared one. flock(2) converts by dropping the
// old lock first, so another process may take it exclusively in between: callers check again
// whatever the lock protects.
func (l *Lock) Downgrade() error {
	for {
		err := unix.Flock(int(l.f.Fd()), unix.LOCK_SH)
		if err == unix.EINTR {
			continue
		}
		return err
	}
}
