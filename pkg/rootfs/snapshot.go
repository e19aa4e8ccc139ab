package rootfs

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/imgrun/imgrun/internal/flock"
	"github.com/opencontainers/go-digest"
	"golang.org/x/sys/unix"
)

// ChainIDs returns the chain IDs of a stack of layers given their diffIDs, bottom first (OCI
// image-spec config.md): ChainID(1) = DiffID(1), ChainID(k) = sha256(ChainID(k-1) + " " +
// DiffID(k)). Equal chain IDs name equal stacks, whatever image they belong to.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(string(out[i-1]) + " " + string(d)))
		out[i] = digest.NewDigestFromBytes(digest.SHA256, sum[:])
	}
	return out
}

func snapLockFile(name string) string { return "snapshot-" + name + ".lock" }

// unsupportedSuffix marks a chain whose top layer needs its lowers (ErrNeedsLowers): images
// with that chain are flattened, without applying the layer again to find out.
const unsupportedSuffix = ".flat"

// Snapshots returns the image with these layers (bottom first, with their diffIDs) as a stack
// of overlayfs layers, top first, for pkg/run's Spec.Rootfs (the first) and Spec.Lowers (the
// rest), and holds them until release is called.
//
// Each layer is kept once under ROOT/snapshots/<chain ID>, shared by every image whose stack
// starts with the same layers: a second image on a cached base costs only its own layers.
// Missing snapshots are built concurrently, each layer applied into its own empty directory
// (whiteouts become overlay whiteouts, opaque markers opaque xattrs), then completed in
// order once the layers below exist (the metadata of directories a layer only wrote into comes
// from the layers below). Composed by overlayfs, the stack shows exactly the tree [Flatten]
// builds; a layer for which that cannot hold fails with [ErrNeedsLowers] (remembered for its
// chain), and callers flatten the image instead. Rootless callers get ErrNeedsLowers too:
// overlay layers need root.
//
// Like trees, snapshots are built in ROOT/tmp and renamed into place after one syncfs, with
// flock(2) on ROOT/locks/snapshot-<hex>.lock: exclusive to build, shared while held.
func (c *Cache) Snapshots(ctx context.Context, diffIDs []digest.Digest, layers []Layer, opts ...ApplyOption) (stack []string, release func(), err error) {
	if len(diffIDs) != len(layers) || len(layers) == 0 {
		return nil, nil, fmt.Errorf("snapshots: %d diffIDs for %d layers", len(diffIDs), len(layers))
	}
	o, err := makeApplyOptions(opts)
	if err != nil {
		return nil, nil, fmt.Errorf("snapshots: %w", err)
	}
	if o.rootless {
		return nil, nil, fmt.Errorf("snapshots: %w: overlay layers need root", ErrNeedsLowers)
	}
	names := make([]string, len(diffIDs))
	for i, ch := range ChainIDs(diffIDs) {
		if names[i], err = keyName(ch); err != nil {
			return nil, nil, fmt.Errorf("snapshots: %w", err)
		}
		if _, err := os.Lstat(filepath.Join(c.snaps, names[i]+unsupportedSuffix)); err == nil {
			return nil, nil, fmt.Errorf("snapshots: layer %d of %d: %w (remembered)", i+1, len(layers), ErrNeedsLowers)
		}
	}
	for {
		stack, release, err := c.snapshots(ctx, names, layers, o)
		if errors.Is(err, errSnapshotGone) {
			continue // removed by gc between our build and our shared lock: build it again
		}
		return stack, release, err
	}
}

var errSnapshotGone = errors.New("snapshot removed meanwhile")

func (c *Cache) snapPath(name string) string { return filepath.Join(c.snaps, name) }

func (c *Cache) hasSnap(name string) bool {
	fi, err := os.Lstat(c.snapPath(name))
	return err == nil && fi.IsDir()
}

// snapshotBuild is one call's work: the layers it builds and where.
type snapshotBuild struct {
	c     *Cache
	names []string
	set   *layerSet
}

func (c *Cache) snapshots(ctx context.Context, names []string, layers []Layer, o *applyOptions) ([]string, func(), error) {
	locks := make([]*flock.Lock, len(names))
	unlockAll := func() {
		for _, l := range locks {
			l.Unlock()
		}
	}
	b := &snapshotBuild{c: c, names: names, set: newLayerSet(layers, o)}
	// Bottom first, as every caller does, so that two processes cannot wait for each other.
	var build []int
	for i, n := range names {
		l, mine, err := c.holdSnap(ctx, n)
		if err != nil {
			unlockAll()
			return nil, nil, fmt.Errorf("snapshots: %w", err)
		}
		locks[i] = l
		if mine {
			build = append(build, i)
		}
	}
	if len(build) > 0 {
		if err := b.run(ctx, build); err != nil {
			unlockAll()
			return nil, nil, err
		}
		for _, i := range build {
			if err := locks[i].Downgrade(); err != nil {
				unlockAll()
				return nil, nil, fmt.Errorf("snapshots: %w", err)
			}
		}
		for _, i := range build {
			if !c.hasSnap(names[i]) {
				unlockAll()
				return nil, nil, errSnapshotGone
			}
		}
	}
	stack := make([]string, len(names))
	for i, n := range names {
		stack[len(names)-1-i] = c.snapPath(n)
	}
	return stack, unlockAll, nil
}

// holdSnap takes the lock of snapshot name: shared if the snapshot exists (mine false),
// exclusive if it is missing and is to be built by the caller (mine true). A snapshot that
// another process is building is waited for, and held shared as soon as it appears, not
// after that process is done using it (it holds it shared then, which an exclusive request
// would wait for).
func (c *Cache) holdSnap(ctx context.Context, name string) (l *flock.Lock, mine bool, err error) {
	path := filepath.Join(c.locks, snapLockFile(name))
	wait := time.Millisecond
	for {
		how := unix.LOCK_EX
		if c.hasSnap(name) {
			how = unix.LOCK_SH
		}
		l, err := flock.TryAcquire(path, how)
		switch {
		case err == nil && how == unix.LOCK_SH && c.hasSnap(name):
			return l, false, nil
		case err == nil && how == unix.LOCK_EX && !c.hasSnap(name):
			return l, true, nil
		case err == nil && how == unix.LOCK_EX: // built meanwhile
			if err := l.Downgrade(); err != nil {
				l.Unlock()
				return nil, false, err
			}
			if c.hasSnap(name) {
				return l, false, nil
			}
			l.Unlock()
			continue
		case err == nil: // removed meanwhile
			l.Unlock()
			continue
		case !errors.Is(err, flock.ErrBusy):
			return nil, false, err
		}
		// Being built, or removed, by someone else: look again shortly.
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, false, context.Cause(ctx)
		case <-t.C:
		}
		wait = min(2*wait, 10*time.Millisecond)
	}
}

// run builds the layers build (indexes, ascending) concurrently, then syncs once and renames
// them into place. On failure nothing is left under snapshots/ but a marker for a layer that
// needs its lowers.
func (b *snapshotBuild) run(ctx context.Context, build []int) (err error) {
	c, set := b.c, b.set
	// Keep pkg/layers' GC, which empties tmp/, away while snapshots are built there.
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	defer gc.Unlock()
	for i, n := range b.names {
		set.dirs[i] = c.snapPath(n)
	}
	var tmps []string
	defer func() {
		if err != nil {
			for _, t := range tmps {
				if t != "" {
					err = errors.Join(err, removeTree(t))
				}
			}
		}
	}()
	for _, i := range build {
		if err := c.removeLeftovers(snapLockFile(b.names[i])); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		if set.dirs[i], err = c.tempDir("snap-" + b.names[i]); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		tmps = append(tmps, set.dirs[i])
	}
	err = set.build(ctx, build, c.snaps)
	for i, e := range set.errs {
		if errors.Is(e, ErrNeedsLowers) {
			// Remember it: later calls flatten this image without applying the layer again.
			_ = os.WriteFile(filepath.Join(c.snaps, b.names[i]+unsupportedSuffix), nil, 0o600)
		}
	}
	if err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	if err := syncFS(c.snaps); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	for k, i := range build {
		if err := os.Rename(set.dirs[i], c.snapPath(b.names[i])); err != nil {
			return fmt.Errorf("snapshots: %w", err)
		}
		tmps[k] = ""
	}
	if err := syncDir(c.snaps); err != nil {
		return fmt.Errorf("snapshots: %w", err)
	}
	return nil
}

// PruneSnapshots removes every snapshot whose chain ID keep rejects, except those in use
// (held by [Cache.Snapshots] or being built), and the markers of chains that need
// flattening likewise. It returns how many snapshots it removed.
func (c *Cache) PruneSnapshots(ctx context.Context, keep func(chainID digest.Digest) bool) (removed int, err error) {
	ents, err := os.ReadDir(c.snaps)
	if err != nil {
		return 0, fmt.Errorf("prune snapshots: %w", err)
	}
	for _, e := range ents {
		if err := ctx.Err(); err != nil {
			return removed, err
		}
		name, marker := strings.CutSuffix(e.Name(), unsupportedSuffix)
		ch, ok := nameKey(name)
		if !ok || keep(ch) {
			continue
		}
		l, err := c.tryLockFile(snapLockFile(name), unix.LOCK_EX)
		if errors.Is(err, ErrInUse) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
		err = c.removeSnapshot(ctx, e.Name(), marker)
		l.Unlock()
		if err != nil {
			return removed, fmt.Errorf("prune snapshots: %w", err)
		}
		if !marker {
			removed++
		}
	}
	return removed, nil
}

// removeSnapshot moves a snapshot out of snapshots/ (so a crash leaves only tmp/ garbage) and
// deletes it; the caller holds its lock.
func (c *Cache) removeSnapshot(ctx context.Context, entry string, marker bool) error {
	if marker {
		return os.Remove(filepath.Join(c.snaps, entry))
	}
	gc, err := c.lockFile(ctx, gcLockName, unix.LOCK_SH)
	if err != nil {
		return err
	}
	defer gc.Unlock()
	trash := filepath.Join(c.tmp, "rmsnap-"+entry+"-"+randomSuffix())
	if err := os.Rename(filepath.Join(c.snaps, entry), trash); err != nil {
		return err
	}
	if err := syncDir(c.snaps); err != nil {
		return err
	}
	return removeTree(trash)
}
