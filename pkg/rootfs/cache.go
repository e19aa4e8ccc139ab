package rootfs

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

var (
	// ErrNotCached reports that the cache holds no tree for a key.
	ErrNotCached = errors.New("rootfs not in cache")
	// ErrInUse reports a tree that cannot be removed because it is being built or used.
	ErrInUse = errors.New("rootfs in use")
)

// Cache keeps flattened trees under ROOT/rootfs/<hex>, keyed by image (manifest) digest. A tree
// is built in ROOT/tmp and renamed into place only when complete and synced, so a tree under
// rootfs/ is always whole; whatever a killed build leaves in tmp/ is never used and is removed
// by [Cache.Clean] or by the next build of the same key.
//
// Processes coordinate with flock(2) on ROOT/locks/rootfs-<hex>.lock: a build holds it
// exclusively (a second process that wants the same tree waits, then reuses it), users of a
// tree hold it shared ([Cache.Acquire], [Cache.Use]) and removal needs it exclusively. Lock
// files are never deleted: unlinking a lock file that another process is waiting on would let
// two processes hold "the" lock at once.
//
// ROOT/rootfs is mode 0700, so setuid files and devices inside trees cannot be reached by
// other users of the host.
type Cache struct {
	root, trees, tmp, locks, snaps string
}

// OpenCache opens (creating if needed) the rootfs cache under root, the --root directory.
func OpenCache(root string) (*Cache, error) {
	c := &Cache{
		root:  root,
		trees: filepath.Join(root, "rootfs"),
		tmp:   filepath.Join(root, "tmp"),
		locks: filepath.Join(root, "locks"),
		snaps: filepath.Join(root, "snapshots"),
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return nil, fmt.Errorf("open rootfs cache: %w", err)
	}
	for _, d := range []string{c.trees, c.tmp, c.locks, c.snaps} {
		if err := os.Mkdir(d, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("open rootfs cache: %w", err)
		}
	}
	// An older or hand-made directory may be more open than that: close it.
	for _, d := range []string{c.trees, c.snaps} {
		if err := os.Chmod(d, 0o700); err != nil {
			return nil, fmt.Errorf("open rootfs cache: %w", err)
		}
	}
	return c, nil
}

// keyName is the directory name of a key: its validated hex (sha256) or alg-hex otherwise.
func keyName(key digest.Digest) (string, error) {
	if err := key.Validate(); err != nil {
		return "", fmt.Errorf("rootfs key %q: %w", key, err)
	}
	if key.Algorithm() == digest.SHA256 {
		return key.Encoded(), nil
	}
	return key.Algorithm().String() + "-" + key.Encoded(), nil
}

func nameKey(name string) (digest.Digest, bool) {
	alg, enc := digest.SHA256, name
	if a, e, ok := strings.Cut(name, "-"); ok {
		alg, enc = digest.Algorithm(a), e
	}
	d := digest.NewDigestFromEncoded(alg, enc)
	return d, d.Validate() == nil
}

// Path is where the tree of key is (or would be) in the cache.
func (c *Cache) Path(key digest.Digest) (string, error) {
	n, err := keyName(key)
	if err != nil {
		return "", err
	}
	return filepath.Join(c.trees, n), nil
}

// Has reports whether the complete tree of key is in the cache.
func (c *Cache) Has(key digest.Digest) bool {
	p, err := c.Path(key)
	if err != nil {
		return false
	}
	fi, err := os.Lstat(p)
	return err == nil && fi.IsDir()
}

// Ensure returns the path of the tree of key, building it from layers with [Flatten]'s
// pipeline first if it is not cached. Concurrent calls for one key, in any processes, build it
// once: the others wait for the build and reuse it. A failed or cancelled build leaves nothing
// under rootfs/. The options are passed to [Apply].
//
// A tree may be removed as soon as Ensure returns; callers that use it call [Cache.Use]
// instead, which also holds it.
func (c *Cache) Ensure(ctx context.Context, key digest.Digest, layers []Layer, opts ...ApplyOption) (string, error) {
	p, err := c.Path(key)
	if err != nil {
		return "", err
	}
	if c.Has(key) {
		return p, nil
	}
	if _, err := makeApplyOptions(opts); err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	name, _ := keyName(key)
	l, err := c.lock(ctx, name, unix.LOCK_EX)
	if err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	defer l.Unlock()
	if c.Has(key) {
		return p, nil // another process built it while we waited
	}
	// Keep pkg/layers' GC, which empties tmp/, away while the tree is built there.
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	defer gc.Unlock()
	// With the lock held no build of this key runs: what tmp/ holds for it is a killed build's.
	if err := c.removeLeftovers(treeLockFile(name)); err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	tmp, err := c.tempDir("build-" + name)
	if err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	tree, err := buildTree(ctx, tmp, layers, opts)
	if err != nil {
		return "", errors.Join(fmt.Errorf("rootfs %s: %w", key, namingDisk(err, tmp)), removeTree(tmp))
	}
	if err := os.Rename(tree, p); err != nil {
		return "", errors.Join(fmt.Errorf("rootfs %s: %w", key, err), removeTree(tmp))
	}
	if err := syncDir(c.trees); err != nil {
		return "", fmt.Errorf("rootfs %s: %w", key, err)
	}
	if tree != tmp {
		if err := removeTree(tmp); err != nil {
			return "", fmt.Errorf("rootfs %s: %w", key, err)
		}
	}
	return p, nil
}

// Acquire holds the tree of key against removal until release is called (a shared lock, so
// any number of users may hold it). It fails with [ErrNotCached] if the tree is not cached.
func (c *Cache) Acquire(ctx context.Context, key digest.Digest) (release func(), err error) {
	name, err := keyName(key)
	if err != nil {
		return nil, err
	}
	l, err := c.lock(ctx, name, unix.LOCK_SH)
	if err != nil {
		return nil, fmt.Errorf("rootfs %s: %w", key, err)
	}
	if !c.Has(key) {
		l.Unlock()
		return nil, fmt.Errorf("rootfs %s: %w", key, ErrNotCached)
	}
	return l.Unlock, nil
}

// Use is [Cache.Ensure] followed by [Cache.Acquire]: it returns the path of the tree of key,
// built if needed, and holds it until release is called.
func (c *Cache) Use(ctx context.Context, key digest.Digest, layers []Layer, opts ...ApplyOption) (path string, release func(), err error) {
	for {
		p, err := c.Ensure(ctx, key, layers, opts...)
		if err != nil {
			return "", nil, err
		}
		release, err := c.Acquire(ctx, key)
		if errors.Is(err, ErrNotCached) {
			continue // removed between the two calls: build it again
		}
		if err != nil {
			return "", nil, err
		}
		return p, release, nil
	}
}

// Remove deletes the tree of key. It fails with [ErrInUse] if the tree is being built or is
// held, and with [ErrNotCached] if there is no tree. The tree first leaves rootfs/ by a rename,
// so a crash while deleting it leaves only garbage in tmp/.
func (c *Cache) Remove(ctx context.Context, key digest.Digest) error {
	name, err := keyName(key)
	if err != nil {
		return err
	}
	l, err := c.tryLock(name, unix.LOCK_EX)
	if err != nil {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	defer l.Unlock()
	// The tree passes through tmp/, which pkg/layers' GC empties: keep it away meanwhile.
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	defer gc.Unlock()
	if !c.Has(key) {
		return fmt.Errorf("remove rootfs %s: %w", key, ErrNotCached)
	}
	trash := filepath.Join(c.tmp, "rm-"+name+"-"+randomSuffix())
	if err := os.Rename(filepath.Join(c.trees, name), trash); err != nil {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	if err := syncDir(c.trees); err != nil {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	if err := removeTree(trash); err != nil {
		return fmt.Errorf("remove rootfs %s: %w", key, err)
	}
	return ctx.Err()
}

// List returns the keys of the cached trees, sorted.
func (c *Cache) List(ctx context.Context) ([]digest.Digest, error) {
	ents, err := os.ReadDir(c.trees)
	if err != nil {
		return nil, fmt.Errorf("list rootfs cache: %w", err)
	}
	var keys []digest.Digest
	for _, e := range ents {
		if d, ok := nameKey(e.Name()); ok && e.IsDir() {
			keys = append(keys, d)
		}
	}
	slices.Sort(keys)
	return keys, ctx.Err()
}

// Clean removes what killed builds and removals left in tmp/: trees whose key is not being
// built right now. It is safe to run while other processes build and use trees.
func (c *Cache) Clean(ctx context.Context) error {
	ents, err := os.ReadDir(c.tmp)
	if err != nil {
		return fmt.Errorf("clean rootfs cache: %w", err)
	}
	var errs []error
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return err
		}
		lockFile, ok := leftoverLock(e.Name())
		if !ok {
			continue // not ours
		}
		l, err := c.tryLockFile(lockFile, unix.LOCK_EX)
		if errors.Is(err, ErrInUse) {
			continue // a build of this key is running: its tmp dir is live
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := removeTree(filepath.Join(c.tmp, e.Name())); err != nil {
			errs = append(errs, err)
		}
		l.Unlock()
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("clean rootfs cache: %w", err)
	}
	return nil
}

// leftoverLock parses the names of what builds and removals leave in tmp/ and returns the
// lock file that guards it: build-<key>-<rand> and rm-<key>-<rand> (trees),
// snap-<hex>-<rand> and rmsnap-<hex>-<rand> (snapshots).
func leftoverLock(n string) (string, bool) {
	lockOf := treeLockFile
	rest, ok := strings.CutPrefix(n, "build-")
	if !ok {
		rest, ok = strings.CutPrefix(n, "rm-")
	}
	if !ok {
		lockOf = snapLockFile
		if rest, ok = strings.CutPrefix(n, "snap-"); !ok {
			if rest, ok = strings.CutPrefix(n, "rmsnap-"); !ok {
				return "", false
			}
		}
	}
	i := strings.LastIndexByte(rest, '-')
	if i < 0 {
		return "", false
	}
	key := rest[:i]
	if _, ok := nameKey(key); !ok {
		return "", false
	}
	return lockOf(key), true
}

// removeLeftovers removes the tmp/ entries guarded by lockFile; the caller holds it
// exclusively.
func (c *Cache) removeLeftovers(lockFile string) error {
	ents, err := os.ReadDir(c.tmp)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if l, ok := leftoverLock(e.Name()); ok && l == lockFile {
			if err := removeTree(filepath.Join(c.tmp, e.Name())); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Cache) tempDir(prefix string) (string, error) {
	p := filepath.Join(c.tmp, prefix+"-"+randomSuffix())
	if err := os.Mkdir(p, 0o700); err != nil {
		return "", err
	}
	return p, nil
}

func randomSuffix() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b) // crypto/rand.Read never fails (Go 1.24)
	return hex.EncodeToString(b)
}

// namingDisk adds to a "no space left on device" error the tree it was writing, so that the
// one line a user sees names the full disk (the entry name alone is inside the image).
func namingDisk(err error, tree string) error {
	if errors.Is(err, unix.ENOSPC) {
		return fmt.Errorf("%w (building %s)", err, tree)
	}
	return err
}
