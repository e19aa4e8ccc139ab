package rootfs

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// gcLockName is pkg/layers' collector lock: its GC empties tmp/ while holding it exclusively,
// so a build under tmp/ holds it shared.
const gcLockName = "gc.lock"

// cacheLock is a held flock(2). flock locks belong to the open file description, so they
// exclude goroutines of one process as well as processes, and die with the process.
type cacheLock struct{ f *os.File }

func (l *cacheLock) unlock() {
	if l != nil && l.f != nil {
		l.f.Close()
		l.f = nil
	}
}

func (c *Cache) openLock(file string) (*os.File, error) {
	p := filepath.Join(c.locks, file)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open lock: %w", err)
	}
	return f, nil
}

func treeLockFile(name string) string { return "rootfs-" + name + ".lock" }

// lock takes the lock of tree name (unix.LOCK_EX or LOCK_SH), waiting until it is free or ctx
// is done. flock cannot be interrupted, so it polls with LOCK_NB.
func (c *Cache) lock(ctx context.Context, name string, how int) (*cacheLock, error) {
	return c.lockFile(ctx, treeLockFile(name), how)
}

func (c *Cache) lockFile(ctx context.Context, file string, how int) (*cacheLock, error) {
	f, err := c.openLock(file)
	if err != nil {
		return nil, err
	}
	wait := time.Millisecond
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		if err == nil {
			return &cacheLock{f: f}, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) && !errors.Is(err, unix.EINTR) {
			f.Close()
			return nil, fmt.Errorf("lock %s: %w", file, err)
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			f.Close()
			return nil, fmt.Errorf("waiting for lock %s: %w", file, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, 50*time.Millisecond)
	}
}

// tryLock takes the lock of tree name without waiting; ErrInUse if it is held.
func (c *Cache) tryLock(name string, how int) (*cacheLock, error) {
	f, err := c.openLock(treeLockFile(name))
	if err != nil {
		return nil, err
	}
	if err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			return nil, ErrInUse
		}
		return nil, fmt.Errorf("lock %s: %w", treeLockFile(name), err)
	}
	return &cacheLock{f: f}, nil
}
