package rootfs

import (
	"context"
	"errors"
	"path/filepath"

	"github.com/imgrun/imgrun/internal/flock"
)

// gcLockName is pkg/layers' collector lock: its GC empties tmp/ while holding it exclusively,
// so a build under tmp/ holds it shared.
const gcLockName = "gc.lock"

func treeLockFile(name string) string { return "rootfs-" + name + ".lock" }

// lock takes the lock of tree name (unix.LOCK_EX or LOCK_SH), waiting until it is free or ctx
// is done (internal/flock).
func (c *Cache) lock(ctx context.Context, name string, how int) (*flock.Lock, error) {
	return c.lockFile(ctx, treeLockFile(name), how)
}

func (c *Cache) lockFile(ctx context.Context, file string, how int) (*flock.Lock, error) {
	return flock.Acquire(ctx, filepath.Join(c.locks, file), how)
}

// tryLock takes the lock of tree name without waiting; ErrInUse if it is held.
func (c *Cache) tryLock(name string, how int) (*flock.Lock, error) {
	return c.tryLockFile(treeLockFile(name), how)
}

// tryLockFile takes the lock file in ROOT/locks without waiting; ErrInUse if it is held.
func (c *Cache) tryLockFile(file string, how int) (*flock.Lock, error) {
	l, err := flock.TryAcquire(filepath.Join(c.locks, file), how)
	if errors.Is(err, flock.ErrBusy) {
		return nil, ErrInUse
	}
	return l, err
}
